// A program linked by hand without weft's -Wl,--wrap=... options (CTest
// `unwrapped_link_*`, tests/CMakeLists.txt). It runs serially as usual; ordered mode refuses to start
// with a message that names the options, instead of losing the output of a std::exit from a tasklet
// or running a function-local static's initialiser twice.
#include <cstdio>
#include <stdexcept>

#include <weft/weft.hpp>

int main() {
  try {
    weft::channel<int> ch;
    weft::spawn([&] {
      for (int i = 1; i <= 3; ++i) ch.send(i);
    });
    int sum = 0;
    for (int i = 0; i < 3; ++i) sum += ch.receive();
    weft::print("sum {}\n", sum);
  } catch (const std::logic_error& e) {
    std::printf("refused: %s\n", e.what());
  }
  return 0;
}
