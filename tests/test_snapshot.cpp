// tasklet/: snapshot and restore of a suspended tasklet's stack (the rollback of DESIGN.md §5).
#include <weft/detail/context.hpp>

#include "support.hpp"

using namespace weft;
using weft::test::fresh_runtime;

TEST_CASE_METHOD(fresh_runtime, "restoring a snapshot re-runs a stretch with identical results", "[unit][snapshot][serial_only]") {
  // What each stretch computed, kept in a tvar (DESIGN.md §5): a stretch run again appends again,
  // since restore_stack below rolls back only the stack, as the test means it to.
  tvar<std::vector<unsigned long>> out_tv;
  auto out = [&] { return out_tv.get(); };
  tasklet t = spawn([&] {
    unsigned long x = 7;        // locals in registers and on the stack
    unsigned long history[16];  // and an array that the stretch rewrites
    for (unsigned long& h : history) h = x;
    for (int step = 0;; ++step) {
      x = x * 6364136223846793005UL + 1442695040888963407UL;
      history[step % 16] ^= x;
      unsigned long sum = 0;
      for (unsigned long h : history) sum += h;
      test::append(out_tv, sum ^ x);
      schedule();
    }
  });
  schedule();  // t runs its first stretch and suspends in schedule()
  REQUIRE(out().size() == 1);

  detail::stack_snapshot snap;
  detail::snapshot_stack(*t.impl(), snap);
  CHECK(snap.size() > 0);
#if !defined(__SANITIZE_ADDRESS__)
  CHECK(snap.size() < 4096);  // a shallow tasklet keeps a small used stack
#endif

  schedule();  // stretch 2
  schedule();  // stretch 3
  REQUIRE(out().size() == 3);
  const std::vector<unsigned long> first{out()[1], out()[2]};

  detail::restore_stack(*t.impl(), snap);  // as if stretches 2 and 3 never ran
  schedule();
  schedule();
  REQUIRE(out().size() == 5);
  CHECK(out()[3] == first[0]);
  CHECK(out()[4] == first[1]);

  // Without a restore the next stretch differs (the test can fail).
  schedule();
  CHECK(out()[5] != first[0]);

  // A snapshot can be restored more than once, and its buffer reused.
  detail::snapshot_stack(*t.impl(), snap);
  schedule();
  unsigned long again = out().back();
  detail::restore_stack(*t.impl(), snap);
  schedule();
  CHECK(out().back() == again);
  detail::restore_stack(*t.impl(), snap);
  schedule();
  CHECK(out().back() == again);
  check_clean();
}
