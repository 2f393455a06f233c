// A million blocked tasklets fit comfortably in memory (issue 3): each costs about one stack page
// plus its control block, and all of them unwind at shutdown. Issue 11 §5: with the default options
// (guard pages on while the map budget allows).
#include <fstream>

#include "support.hpp"

using namespace weft;
using weft::test::fresh_runtime;

namespace {
long rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6)) * 1024;
  return 0;
}
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "a million tasklets blocked on one channel, then shut down", "[stress][memory][heavy]") {
#if defined(__SANITIZE_THREAD__)
  const long n = 5000;  // TSan counts every tasklet (fiber) as a thread, at most 8128 at once
#elif defined(__SANITIZE_ADDRESS__)
  const long n = 20000;  // sanitizer stacks and shadow memory are several times larger
#else
  const long n = 1000000;
#endif
  // Default options: guard pages on, as many as vm.max_map_count allows with room to spare (each
  // costs a kernel mapping); the stacks made after that have none, and nothing fails for want of a
  // mapping (a Debug build once died of std::bad_alloc past ~35,000 tasklets: the guards had used
  // up the mappings its next slab needed).
  configure({});
  channel<int> ch;
  tvar<long> unwound{0};  // counted by each tasklet as it unwinds: a tvar (DESIGN.md §5)
  struct count_unwind {
    tvar<long>* n;
    ~count_unwind() { n->set(n->get() + 1); }
  };
  getcurrent();
  const long before = rss_bytes();
  for (long i = 0; i < n; ++i) {
    spawn([&] {
      count_unwind c{&unwound};
      ch.receive();
    });
  }
  run();
  const long per_tasklet = (rss_bytes() - before) / n;
  std::printf("%ld blocked tasklets: %ld bytes each\n", n, per_tasklet);
  CHECK(ch.balance() == -n);
  CHECK(resources().stacks_in_use == static_cast<std::size_t>(n));
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  CHECK(per_tasklet < 8192);  // about one 4 KiB stack page + the control block
#endif
  auto counts = weft::shutdown();
  CHECK(unwound.get() == n);
  CHECK(counts.live_tasklets == 0);
  CHECK(counts.stacks_in_use == 0);
  configure({});
}
