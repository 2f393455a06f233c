// Overflows a tasklet's stack on purpose: weft must report it clearly and abort (checked by the CTest
// tests `stack_overflow_is_reported` and `stack_overflow_without_a_guard_page_...` through the output).
#include <cstdio>
#include <cstring>
#include <latch>
#include <thread>
#include <vector>

#include <weft/weft.hpp>

namespace {
[[gnu::noinline]] int recurse(int n) {  // one 512-byte frame per call: every page of the stack gets touched
  volatile char pad[512];
  pad[n % 512] = static_cast<char>(n);
  return recurse(n + 1) + pad[(n * 7) % 512];  // not a tail call
}
[[gnu::noinline]] int too_big_a_frame() {
  volatile char big[72 * 1024];
  for (std::size_t i = 0; i < sizeof big; ++i) big[i] = 1;
  weft::schedule();  // the switch point that finds the overflow
  return big[100];
}
// 16 KiB a frame, its lowest byte written first: without the compiler's probes of every page, the
// first write of the frame that reaches past the stack lands below the guard page.
volatile int sink;
[[gnu::noinline]] int big_frames(int n) {
  volatile char buf[16 * 1024];
  buf[0] = static_cast<char>(n);
  const int r = big_frames(n + 1);
  sink = buf[0];
  return r + 1;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "big_frames") == 0) {
    // Tasklets on the stacks around the deep one hold locals across a switch point: overwritten,
    // they were reported as "bad" and the run went on (a newcomer's program, round 11).
    weft::configure({.stack_size = 64 * 1024});
    for (int k = 0; k < 8; ++k) {
      if (k == 4) weft::spawn([] { std::printf("%d\n", big_frames(0)); });
      weft::spawn([k] {
        volatile long mine[512];
        for (auto& v : mine) v = k;
        weft::schedule();
        long bad = 0;
        for (auto& v : mine) bad += v != k;
        std::printf("tasklet %d: %ld locals overwritten\n", k, bad);
      });
    }
    weft::run();
    std::puts("not reached");
    return 0;
  }
  if (argc > 1 && std::strcmp(argv[1], "unguarded") == 0) {
    // No guard page: a frame larger than the stack runs over its lowest bytes (into the slot below,
    // whose tasklet waits on a channel and never runs again), and the overflow is found when the
    // tasklet switches.
    weft::configure({.stack_size = 64 * 1024, .stack_guard = false});
    weft::channel<int> never;
    weft::spawn([never] { never.receive(); });  // takes the lowest stack of the slab, and keeps it
    weft::spawn([] {
      weft::schedule();  // in ordered mode the next segment starts after the first tasklet blocked
      std::printf("%d\n", too_big_a_frame());
    });
    weft::run();
    std::puts("not reached");
    return 0;
  }
  if (argc > 1 && std::strcmp(argv[1], "threads") == 0) {
    // Several threads overflow at once (a program whose every tasklet recurses too deep, at two
    // workers): one report, and the process dies of SIGABRT — the second fault used to find SIGSEGV
    // reset to its default action by the first report and end the process with a bare segfault.
    constexpr int n = 8;
    weft::configure({.stack_size = 64 * 1024, .stack_guard = true});
    std::latch start(n);
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i)
      threads.emplace_back([&] {
        weft::spawn([] { std::printf("%d\n", recurse(0)); });
        start.arrive_and_wait();
        weft::run();
      });
    for (auto& t : threads) t.join();
    std::puts("not reached");
    return 0;
  }
  // "default": the options' default, guard pages on in every build (while the map budget allows).
  if (argc > 1 && std::strcmp(argv[1], "default") == 0)
    weft::configure({.stack_size = 64 * 1024});
  else
    weft::configure({.stack_size = 64 * 1024, .stack_guard = true});
  weft::spawn([] { std::printf("%d\n", recurse(0)); });
  weft::run();
  std::puts("not reached");
  return 0;
}
