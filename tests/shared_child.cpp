// A weft::shared object whose destructor prints: its line comes where one worker prints it, between
// the lines its tasklet printed before and after dropping the last handle, in every mode (ordered
// mode destroys it when the segment commits; the commit puts it in its place in the segment's
// buffered output). Tasklet 1 runs inevitable: there the handle goes at once.
// With the argument `identity`: the destructor's getcurrent() and channels are its tasklet's.
// With the argument `bound`: the same for a capture of a tasklet bound and never run.
// With the argument `bound_sends`: the same for the captures of a tasklet that never ran.
// With the argument `sends`: a destructor that sends on a channel is refused, with the message on
// stderr, at every worker count (at a commit it would run outside any tasklet; round 19 crashed there).
#include <cstdint>
#include <cstring>
#include <utility>

#include <weft/weft.hpp>

namespace {
struct loud {
  int id;
  explicit loud(int i) : id(i) {}
  loud(const loud&) = delete;
  ~loud() { weft::print("~{}\n", id); }
};
// A capture that prints when it goes (a moved-from one is silent).
struct loud_capture {
  int id;
  bool live = true;
  explicit loud_capture(int i) : id(i) {}
  loud_capture(loud_capture&& o) noexcept : id(o.id), live(std::exchange(o.live, false)) {}
  loud_capture(const loud_capture&) = delete;
  ~loud_capture() {
    if (live) weft::print("~{}\n", id);
  }
};
// Names the tasklet it goes in and makes a channel there.
struct identity_probe {
  int id;
  explicit identity_probe(int i) : id(i) {}
  identity_probe(const identity_probe&) = delete;
  ~identity_probe() {
    weft::channel<int> made;
    weft::print("~{} in tasklet {} made {}\n", id, weft::getcurrent().id(), made.id());
  }
};
}  // namespace

struct notifier {
  weft::channel<int>* to;
  ~notifier() { to->send(1); }
};

weft::tvar<int> wrong_current{0};
// Counts a destructor that finds getcurrent() other than the tasklet it names.
struct expects_current {
  std::uint64_t expected;
  explicit expects_current(std::uint64_t e) : expected(e) {}
  expects_current(const expects_current&) = delete;
  ~expects_current() {
    if (weft::getcurrent().id() != expected) wrong_current.set(wrong_current.get() + 1);
  }
};
struct capture_expects_current {  // a moved-from one checks nothing
  std::uint64_t expected;
  bool live = true;
  explicit capture_expects_current(std::uint64_t e) : expected(e) {}
  capture_expects_current(capture_expects_current&& o) noexcept : expected(o.expected), live(std::exchange(o.live, false)) {}
  ~capture_expects_current() {
    if (live && weft::getcurrent().id() != expected) wrong_current.set(wrong_current.get() + 1);
  }
};

struct capture_notifier {  // a moved-from one is silent
  weft::channel<int>* to;
  explicit capture_notifier(weft::channel<int>* t) : to(t) {}
  capture_notifier(capture_notifier&& o) noexcept : to(std::exchange(o.to, nullptr)) {}
  ~capture_notifier() {
    if (to) to->send(1);
  }
};

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "bound") == 0) {
    // A tasklet bound and never run, whose function captures a `loud`: its last handle, dropped in
    // another tasklet, destroys the capture there (newcomer round 24: in ordered mode the line came
    // after the segment's later ones). Tasklet 1 runs inevitable.
    for (int i = 0; i < 4; ++i)
      weft::spawn([i] {
        for (int round = 0; round < 2; ++round) {
          if (i == 1) weft::become_inevitable("test");
          weft::tasklet t([l = loud_capture(10 * i + round)] { weft::print("never runs\n"); });
          weft::schedule();
          auto copy = t;
          weft::print("{}.{} a\n", i, round);
          t = weft::tasklet();
          weft::print("{}.{} b\n", i, round);
          copy = weft::tasklet();  // the last handle
          weft::print("{}.{} c\n", i, round);
          weft::schedule();
        }
      });
    weft::run();
    weft::print("end\n");
    return 0;
  }
  if (argc > 1 && std::strcmp(argv[1], "identity") == 0) {
    // The destructor runs for the tasklet that drops the last handle, as with one worker: getcurrent()
    // is that tasklet, and a channel it makes is that tasklet's next one (newcomer round 24: at a
    // commit, getcurrent() was empty and its id() ended the program; the channel was nobody's, and
    // the tasklet's later channels were numbered one lower). Tasklet 1 runs inevitable.
    for (int i = 0; i < 4; ++i)
      weft::spawn([i] {
        if (i == 1) weft::become_inevitable("test");
        auto h = weft::shared<identity_probe>::make(i);
        weft::schedule();
        weft::print("{} a\n", i);
        h.reset();  // the last handle
        weft::print("{} b\n", i);
        weft::schedule();
        weft::channel<int> later;
        weft::print("{} later {}\n", i, later.id());
      });
    weft::run();
    weft::print("end\n");
    return 0;
  }
  if (argc > 1 && std::strcmp(argv[1], "identity_main") == 0) {
    // The same when main's thread commits such a segment at main's own switch point (a receive that
    // blocks), where main is the thread's running tasklet: the destructor still runs for the
    // tasklet that dropped the handle. And for the captures of a tasklet killed before it ran: they
    // go in the killer. Each checks getcurrent() against the tasklet it expects.
    constexpr int n = 16;
    weft::channel<int> done;
    for (int i = 0; i < n; ++i)
      weft::spawn([i, done] {
        auto h = weft::shared<expects_current>::make(weft::getcurrent().id());
        weft::tasklet victim([c = capture_expects_current(weft::getcurrent().id())] {});
        weft::schedule();
        h.reset();
        victim.kill();
        done.send(i);
      });
    for (int i = 0; i < n; ++i) done.receive();
    weft::print("wrong {}\n", wrong_current.get());
    return 0;
  }
  // A send in a capture of a tasklet that never ran, destroyed with its last handle (bound_sends)
  // or killed (kill_unrun_sends), is refused too (at two workers a send there crashed at the commit).
  const bool kills = argc > 1 && std::strcmp(argv[1], "kill_unrun_sends") == 0;
  if (kills || (argc > 1 && std::strcmp(argv[1], "bound_sends") == 0)) {
    weft::channel<int> released;
    released.preference(1);
    weft::spawn([&] {
      weft::tasklet t([n = capture_notifier(&released)] {});
      weft::schedule();
      weft::print("{}\n", kills ? "killer kills" : "holder drops");
      if (kills)
        t.kill();
      else
        t = weft::tasklet();
      weft::print("not reached\n");
    });
    weft::spawn([&] { weft::print("got {}\n", released.receive()); });
    weft::run();
    return 0;
  }
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
