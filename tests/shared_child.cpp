// A weft::shared object whose destructor prints: its line comes where one worker prints it, between
// the lines its tasklet printed before and after dropping the last handle, in every mode (ordered
// mode destroys it when the segment commits; the commit puts it in its place in the segment's
// buffered output). Tasklet 1 runs inevitable: there the handle goes at once.
// With the argument `sends`: a destructor that sends on a channel is refused, with the message on
// stderr, at every worker count (at a commit it would run outside any tasklet; round 19 crashed there).
#include <cstring>

#include <weft/weft.hpp>

namespace {
struct loud {
  int id;
  explicit loud(int i) : id(i) {}
  loud(const loud&) = delete;
  ~loud() { weft::print("~{}\n", id); }
};
}  // namespace

struct notifier {
  weft::channel<int>* to;
  ~notifier() { to->send(1); }
};

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "sends") == 0) {
    weft::channel<int> released;
    released.preference(1);
    weft::spawn([&] {
      auto h = weft::shared<notifier>::make(notifier{&released});
      weft::print("holder drops\n");
      h.reset();
      weft::print("not reached\n");
    });
    weft::spawn([&] { weft::print("got {}\n", released.receive()); });
    weft::run();
    return 0;
  }
  for (int i = 0; i < 4; ++i)
    weft::spawn([i] {
      for (int round = 0; round < 2; ++round) {
        if (i == 1) weft::become_inevitable("test");
        auto h = weft::shared<loud>::make(10 * i + round);
        auto copy = h;
        weft::print("{}.{} a\n", i, round);
        h.reset();
        weft::print("{}.{} b\n", i, round);
        copy.reset();  // the last handle
        weft::print("{}.{} c\n", i, round);
        weft::schedule();
      }
    });
  weft::run();
  weft::print("end\n");
}
