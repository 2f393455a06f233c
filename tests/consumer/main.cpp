#include <weft/weft.hpp>

int main() {
  weft::channel<int> ch;
  int sum = 0;
  weft::spawn([&] {
    for (int i = 1; i <= 10; ++i) ch.send(i);
  });
  weft::spawn([&] {
    for (int i = 0; i < 10; ++i) sum += ch.receive();
  });
  weft::run();
  weft::print("consumer sum {}\n", sum);
  return sum == 55 ? 0 : 1;
}
