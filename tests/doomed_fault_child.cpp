// Faults on a doomed path (issue 10): a speculative segment that read a stale divisor or pointer
// faults where serial order never would. The attempt is rolled back like a conflict and runs again
// at the head, inevitable; the output is the serial one. A fault that serial order also meets is
// still reported: `weft_doomed_fault_child real` divides by zero at the head and dies of SIGFPE.
#include <chrono>
#include <cstring>

#include <weft/weft.hpp>

namespace {

weft::tvar<int> divisor{0};
weft::tvar<int*> target{nullptr};
int cell = 42;

void spin_ms(int ms) {  // a long segment: the others start beside it at two workers
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bool real = argc > 1 && std::strcmp(argv[1], "real") == 0;
  weft::spawn([real] {
    spin_ms(30);
    if (!real) weft::atomically([] { divisor.set(5); target.set(&cell); });
    weft::print("A set\n");
  });
  weft::spawn([] {
    volatile int d = divisor.view([](int v) { return v; });
    const int q = 100 / d;  // SIGFPE while A has not committed
    weft::print("B: {}\n", q);
  });
  weft::spawn([] {
    int* volatile p = target.view([](int* v) { return v; });
    weft::print("C: {}\n", *p);  // SIGSEGV while A has not committed
  });
  weft::run();
  weft::print("done\n");
  return 0;
}
