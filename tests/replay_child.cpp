// WEFT_CHECK=replay (CTest `replay_*`, tests/CMakeLists.txt).
//   replay_child          a tasklet that breaks the memory contract (DESIGN.md §5) in a way abort
//                         injection cannot see: it increments a plain global and prints it. The check
//                         must report it with the tasklet's name, and abort.
//   replay_child nodes    a tasklet that keeps to the contract and stores pointers to nodes it
//                         allocates in a tvar<node*> (a linked stack): each run of a segment gets new
//                         addresses, which the check must not take for a difference.
#include <string>

#include <weft/weft.hpp>

namespace {
int counter = 0;  // plain shared state, written by a tasklet: outside the contract

struct node {
  int value;
  node* next;
};

int plain_global() {
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

int nodes() {
  weft::tvar<node*> top{nullptr, "top"};
  for (int k = 0; k < 3; ++k)
    weft::spawn([&, k] {
      for (int i = 0; i < 4; ++i) {
        top.set(new node{k * 10 + i, top.get()});
        weft::schedule();
      }
    });
  weft::run();
  int sum = 0, count = 0;
  for (node* n = top.get(); n;) {
    sum += n->value, ++count;
    node* next = n->next;
    delete n;
    n = next;
  }
  weft::print("{} nodes, sum {}\n", count, sum);
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "nodes") return nodes();
  return plain_global();
}
