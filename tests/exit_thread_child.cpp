// The process exits while another thread's main waits in a channel operation for mail (SEMANTICS.md
// §5b). The exit ends the exiting thread's runtime; the waiting thread must not take that for a
// deadlock: it would throw weft::deadlock_error in its main and std::terminate would end the exit
// with status 134 (newcomer round 18: 2-14 runs of 50, at one worker and at two). Each mode prints
// one line and exits with its own status; tests/repeat_status.sh runs it many times.
//
//   weft_exit_thread_child thread_tasklet   a tasklet of a second thread calls std::exit(4) while the
//                                           first thread's main waits in receive()
//   weft_exit_thread_child main_tasklet     a tasklet of the first thread calls std::exit(5) while the
//                                           second thread's main waits in receive()
//   weft_exit_thread_child thread_main      the second thread's main (no tasklet) calls std::exit(6)
//                                           while the first thread's main waits in receive()
//   weft_exit_thread_child main_returns     main returns (status 0) while a detached thread's main
//                                           waits in receive()
#include <cstdlib>
#include <cstring>
#include <thread>

#include <weft/weft.hpp>

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "";
  weft::channel<int> c;  // nobody ever sends on it
  if (std::strcmp(mode, "thread_tasklet") == 0) {
    std::thread t([] {
      weft::spawn([] {
        weft::print("a tasklet of the second thread calls exit(4)\n");
        std::exit(4);
      });
      weft::run();
    });
    weft::print("never printed {}\n", c.receive());
    t.join();
  } else if (std::strcmp(mode, "main_tasklet") == 0) {
    std::thread t([&c] { weft::print("never printed {}\n", c.receive()); });
    weft::spawn([] {
      weft::print("a tasklet of the first thread calls exit(5)\n");
      std::exit(5);
    });
    weft::run();
    t.join();
  } else if (std::strcmp(mode, "thread_main") == 0) {
    std::thread t([] {
      weft::getcurrent();  // this thread uses weft
      weft::print("the second thread's main calls exit(6)\n");
      std::exit(6);
    });
    weft::print("never printed {}\n", c.receive());
    t.join();
  } else if (std::strcmp(mode, "main_returns") == 0) {
    auto* kept = new weft::channel<int>(c);  // the waiting thread's channel outlives main's frame
    std::thread([kept] { weft::print("never printed {}\n", kept->receive()); }).detach();
    while (c.balance() != -1) std::this_thread::yield();  // it waits
    weft::print("main returns\n");
    return 0;
  } else {
    return 2;
  }
}
