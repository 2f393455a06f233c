// Overflows a tasklet's stack on purpose: with guard pages on, weft must report it clearly and abort
// (checked by the CTest test `stack_overflow_is_reported` through its output).
#include <cstdio>

#include <weft/weft.hpp>

namespace {
[[gnu::noinline]] int recurse(int n) {  // one 512-byte frame per call: every page of the stack gets touched
  volatile char pad[512];
  pad[n % 512] = static_cast<char>(n);
  return recurse(n + 1) + pad[(n * 7) % 512];  // not a tail call
}
}  // namespace

int main() {
  weft::configure({.stack_size = 64 * 1024, .stack_guard = true});
  weft::spawn([] { std::printf("%d\n", recurse(0)); });
  weft::run();
  std::puts("not reached");
  return 0;
}
