// Output that must not be lost (issue 11 §4): weft::print reaches a file or pipe at once, and an
// exception that escapes a tasklet and then main ends the program through std::terminate with a
// message naming the tasklet, after every line printed before it.
//   weft_lost_output_child uncaught   a named tasklet throws; main does not catch
//   weft_lost_output_child unnamed    the same from a tasklet without a name
//   weft_lost_output_child killed_in_unwinding
//                                     a tasklet killed a second time while a destructor that the
//                                     first kill's unwinding ran waits at a switch point: C++ ends
//                                     the program; the message says why and names the tasklet
//   weft_lost_output_child killed_by_shutdown
//                                     killed once by main, the tasklet is left waiting in that
//                                     destructor; main returns and the shutdown kills it again: the
//                                     message says the second kill was the shutdown's (round 8)
//   weft_lost_output_child killed_in_destructor
//                                     killed while a destructor (no unwinding: the scope ended)
//                                     waits at a switch point: C++ ends the program; the message
//                                     says why and names the tasklet (round 11: a bare terminate)
//   weft_lost_output_child main_deadlock / main_sent / main_raised
//                                     main does not catch what reaches it at a switch point: its
//                                     deadlock error, a send_exception, a raise_exception: the
//                                     message names main and the exception, not a destructor
//                                     (round 12: it blamed a destructor that was not there)
//   weft_lost_output_child caught_then_main_deadlock
//                                     a tasklet's exception escapes and main catches it at run();
//                                     then main's own deadlock error ends the program: the message
//                                     must not name the tasklet (round 14: the new exception had
//                                     the caught one's address)
//   weft_lost_output_child main_raised_in_destructor
//                                     main raised into while its destructor waits at a switch point:
//                                     that message, for main
//   weft_lost_output_child second_kill_caught
//                                     the same, with destructors that catch the second kill: once
//                                     during the run, then at exit (the shutdown's kills), where
//                                     weft's note of the throw was freed twice (round 6, p5)
#include <cstring>
#include <string_view>
#include <stdexcept>

#include <weft/weft.hpp>

namespace {
weft::channel<int> notify;
struct notifier {
  ~notifier() {
    weft::print("destructor sends\n");
    notify.send(1);  // blocks: nobody receives
    weft::print("not reached\n");
  }
};
weft::channel<int> wait_here, nobody_reads;
struct farewell {
  int id;
  ~farewell() {
    try {
      nobody_reads.send(id);  // blocks: the kill's unwinding waits here
    } catch (const weft::tasklet_exit&) {
      weft::print("{} caught a second kill\n", id);
    }
  }
};
}  // namespace

int main(int argc, char** argv) {
  const std::string_view what = argc > 1 ? argv[1] : "";
  if (what == "main_deadlock") {
    weft::channel<int> c;
    weft::spawn([] { weft::print("tasklet ends\n"); });
    c.receive();  // the tasklet ends, nobody else can send: the deadlock error, not caught
    weft::print("not reached\n");
    return 0;
  }
  if (what == "caught_then_main_deadlock") {
    weft::channel<int> c;
    weft::spawn([] { throw std::out_of_range("kb"); }).set_name("boom");
    try {
      weft::run();
    } catch (const std::out_of_range& e) {
      weft::print("main caught {}\n", e.what());
    }
    c.receive();  // the deadlock error, thrown in main, not caught
    weft::print("not reached\n");
    return 0;
  }
  if (what == "main_sent" || what == "main_raised") {
    weft::channel<int> c;
    if (what == "main_sent")
      weft::spawn([&] { c.send_exception(std::runtime_error("sent to main")); });
    else
      weft::spawn([] { weft::getmain().raise_exception(std::make_exception_ptr(std::runtime_error("raised into main"))); });
    c.receive();
    weft::print("not reached\n");
    return 0;
  }
  if (what == "main_raised_in_destructor") {
    weft::spawn([] {
      weft::print("raising into main\n");
      weft::getmain().raise_exception(std::make_exception_ptr(std::runtime_error("raised into main")));
    });
    {
      notifier n;  // blocks in send; the tasklet raises into main there
    }
    weft::print("not reached\n");
    return 0;
  }
  if (argc > 1 && std::strcmp(argv[1], "second_kill_caught") == 0) {
    weft::tasklet first;
    for (int i = 0; i < 3; ++i) {
      weft::tasklet t = weft::spawn([i] {
        farewell f{i};
        wait_here.receive();
      });
      if (i == 0) first = t;
    }
    weft::schedule();  // each blocks in receive
    first.kill();      // unwinds into the destructor, which blocks in send
    first.kill();      // thrown into the destructor and caught there
    weft::print("main returns, first alive {}\n", first.alive());
    return 0;  // the shutdown at exit does the same to the other two
  }
  if (argc > 1 && std::strcmp(argv[1], "killed_in_destructor") == 0) {
    weft::tasklet t = weft::spawn([] {
      {
        notifier n;
      }  // the destructor blocks in send
      weft::print("not reached\n");
    });
    t.set_name("holder");
    weft::schedule();
    weft::print("killing it\n");
    t.kill();  // thrown out of the destructor
    weft::print("not reached\n");
    return 0;
  }
  const bool by_shutdown = argc > 1 && std::strcmp(argv[1], "killed_by_shutdown") == 0;
  if (by_shutdown || (argc > 1 && std::strcmp(argv[1], "killed_in_unwinding") == 0)) {
    weft::tasklet t = weft::spawn([] {
      notifier n;
      notify.receive();
    });
    t.set_name("holder");
    weft::schedule();
    t.kill();  // unwinds; the destructor blocks in send
    if (by_shutdown) {
      weft::print("main returns\n");
      return 0;  // the shutdown at exit kills it again
    }
    weft::print("killed once\n");
    t.kill();  // thrown out of the destructor
    weft::print("not reached\n");
    return 0;
  }
  const bool named = argc > 1 && std::strcmp(argv[1], "uncaught") == 0;
  weft::print("line one\n");
  weft::tasklet t = weft::spawn([] {
    weft::print("line two\n");
    weft::schedule();
    throw std::runtime_error("boom");
  });
  if (named) t.set_name("worker");
  weft::spawn([] { weft::print("line three\n"); });
  weft::run();  // rethrows "boom" here; nobody catches it
  weft::print("not reached\n");
  return 0;
}
