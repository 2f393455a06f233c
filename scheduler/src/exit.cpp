// std::exit in ordered mode. weft links programs with `-Wl,--wrap=exit` (see the top-level
// CMakeLists.txt): every call to exit() from the program's own code comes here first. A tasklet
// that calls std::exit while its segment is speculative must not end the process before the
// segments ahead of it in serial order have committed (their output would be lost, and the exit
// might come from a state that serial order never reaches), and static destructors must not run
// while other threads are still inside user code. ordered_before_exit() sees to both; with one
// worker, or outside weft, this is exit() itself.
#include <cstdlib>

#include "ordered.hpp"

extern "C" [[noreturn]] void __real_exit(int status);

extern "C" [[noreturn]] void __wrap_exit(int status) {
  weft::detail::ordered_before_exit();
  __real_exit(status);
}
