// Calls a speculative segment cannot take back. weft links programs with `-Wl,--wrap=...` for each
// of them (see the top-level CMakeLists.txt), so that a call from the program's own code comes here
// first; like libitm's irrevocable mode, a speculative segment then waits for its turn (parks until
// its tasklet is the head, and goes on inevitable) before the call happens. With one worker, or
// outside weft, each is the plain call plus one check.
//
//   exit()                 A tasklet's exit must not end the process before the segments ahead of it
//                          in serial order have committed (their output would be lost, and the exit
//                          might come from a state serial order never reaches), and static destructors
//                          must not run while other threads are inside user code: see
//                          ordered_before_exit().
//   __cxa_guard_acquire    The first use of a function-local static runs its initialiser once, for
//                          good: run speculatively and rolled back, the static would stay marked
//                          initialised with a value computed from a stale state, holding memory the
//                          rollback freed. (The compiler calls it only while the guard is not set
//                          yet, so initialised statics cost nothing.)
#include <cstdint>
#include <cstdlib>

#include "ordered.hpp"
#include "weft/detail/intent.hpp"

extern "C" [[noreturn]] void __real_exit(int status);
extern "C" int __real___cxa_guard_acquire(std::int64_t* guard);

extern "C" [[noreturn]] void __wrap_exit(int status) {
  weft::detail::ordered_before_exit();
  __real_exit(status);
}

extern "C" int __wrap___cxa_guard_acquire(std::int64_t* guard) {
  // The first byte is set once the static is initialised (Itanium C++ ABI 3.3.2).
  if (*reinterpret_cast<volatile const char*>(guard) == 0) weft::detail::observe_scheduler();
  return __real___cxa_guard_acquire(guard);
}
