// A tasklet that breaks the memory contract (DESIGN.md §5) in a way abort injection cannot see: it
// increments a plain global and prints it. WEFT_CHECK=replay must report it (CTest
// `replay_check_finds_a_plain_global`) with the tasklet's name, and abort.
#include <weft/weft.hpp>

namespace {
int counter = 0;  // plain shared state, written by a tasklet: outside the contract
}  // namespace

int main() {
  weft::channel<int> ch;
  weft::tasklet t = weft::spawn([&] {
    for (int i = 0; i < 3; ++i) {
      ++counter;
      weft::print("counter {}\n", counter);
      ch.send(i);
    }
  });
  t.set_name("counting");
  for (int i = 0; i < 3; ++i) ch.receive();
  weft::print("done\n");
  return 0;
}
