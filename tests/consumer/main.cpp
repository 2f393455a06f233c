#include <weft/weft.hpp>

int main() {
  weft::channel<int> ch;
  weft::tvar<int> sum{0};  // written by a tasklet: a tvar (weft's memory contract)
  weft::spawn([&] {
    for (int i = 1; i <= 10; ++i) ch.send(i);
  });
  weft::spawn([&] {
    for (int i = 0; i < 10; ++i) sum.set(sum.get() + ch.receive());
  });
  weft::run();
  weft::print("consumer sum {}\n", sum.get());
  return sum.get() == 55 ? 0 : 1;
}
