// Calls that end the process with no destructor run — abort(), a failed assert(), quick_exit(),
// _Exit() — from tasklets (newcomer round 16). Run in the mode matrix: the output must be the serial
// one in every mode.
//
//   weft_abort_child stale_assert   tasklet B asserts on a tvar that tasklet A, before it in serial
//   weft_abort_child stale_abort    order, set in the same round (abort() if it is wrong; quick_exit(9),
//   weft_abort_child stale_quick    _Exit(9)). With one worker the check always holds; a speculative
//   weft_abort_child stale__Exit    segment that read the value before A committed must be rolled back,
//                                   not end the program (every run at 2 workers did). Prints "done".
//   weft_abort_child stale_loop     tasklet B loops (allocating) while the value it read is stale: the
//   weft_abort_child stale_reads    head's segment must find out and roll back (every run at 2 workers
//                                   hung); `stale_reads` loops reading an unchanged tvar instead.
//   weft_abort_child abort          30 tasklets print a line a round; tasklet 17 prints and calls
//   weft_abort_child assert         abort() (a failing assert, quick_exit(7)) in round 3: every line
//   weft_abort_child quick          serial order prints before it comes out, nothing after (the
//                                   tasklet's own two lines and those of tasklets before it were lost).
#include <cassert>
#include <cstdlib>
#include <cstring>
#include <string>

#include <weft/weft.hpp>

namespace {

weft::tvar<int> x{0};
weft::tvar<int> y{5};

// Keeps a value (and the work that made it) from being optimised away, touching no shared memory.
template <class T>
void keep(const T& v) {
  asm volatile("" : : "r"(v) : "memory");
}

// Long enough that B's second segment runs on the other thread while A's runs.
void spin() {
  long acc = 0;
  for (long k = 0; k < 200000; ++k) {
    acc += k;
    keep(acc);
  }
}

[[noreturn]] void end_with(const std::string& how) {
  if (how == "abort") std::abort();
  if (how == "quick") std::quick_exit(9);
  if (how == "_Exit") std::_Exit(9);
  std::exit(99);  // (not reached)
}

void stale(const std::string& how) {
  for (int rep = 0; rep < 100; ++rep) {
    x.set(0);
    weft::spawn([] {
      weft::schedule();
      spin();
      x.set(1);
    });
    weft::spawn([how] {
      weft::schedule();
      const int v = x.get();
      if (how == "assert") {
        assert(v == 1);
      } else if (how == "loop") {
        if (v == 0)
          for (;;) {
            std::string s(100, 'x');  // operator new and delete
            keep(s.data());
          }
      } else if (how == "reads") {
        if (v == 0)
          for (;;) keep(y.get());
      } else if (v != 1) {
        end_with(how);
      }
    });
    weft::run();
  }
  weft::print("done\n");
}

void ends_in_round_3(const std::string& how) {
  for (int i = 0; i < 30; ++i)
    weft::spawn([i, how] {
      for (int r = 0; r < 6; ++r) {
        weft::atomically([] { x.set(x.get() + 1); });
        weft::print("t{} r{}\n", i, r);
        if (i == 17 && r == 3) {
          weft::print("t17 ends, {} rounds counted\n", x.get());
          if (how == "assert") assert(x.get() < 0);
          if (how == "quick") std::quick_exit(7);
          std::abort();
        }
        weft::schedule();
      }
    });
  weft::run();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode.rfind("stale_", 0) == 0) {
    stale(mode.substr(6));
    return 0;
  }
  if (mode == "abort" || mode == "assert" || mode == "quick") {
    ends_in_round_3(mode);
    return 0;
  }
  return 2;
}
