// bench/micro.cpp — Google Benchmark microbenchmarks of weft's primitives (one worker).
//
// What each measures (the benchmark loop runs in the main tasklet):
//   BM_yield_switch        main and one partner tasklet both in the ring, each calling schedule();
//                          one iteration = 2 switches (main -> partner -> main). The `per_switch`
//                          counter is the time of one switch.
//   BM_channel_round_trip  main sends i to an echo tasklet and receives i + 1 back (default preference
//                          -1: each send switches straight to the waiting receiver).
//   BM_spawn_run_trivial   spawn a tasklet with an empty body and run() it to its end: control block,
//                          stack from the pool, first switch in, exit, stack back to the pool.
//   BM_spawn_blocking      spawn a tasklet that blocks in receive() on a shared channel and run() it up
//                          to there. The blocked tasklets pile up; every `batch` spawns they are killed
//                          with shutdown() with the clock stopped, and once more at the end.
//   BM_try_receive_empty   try_receive on a channel nobody sends on (would_block: the non-blocking
//                          path that never switches).
//   BM_delete_outside_transaction/threads
//                          new + delete of a 64-byte object outside any transaction while `threads`
//                          threads use the STM (1: this one; 2: plus an idle one that ran a
//                          transaction). With two, the delete goes through the epoch GC
//                          (privatization safety, README "Freeing memory transactions may still
//                          read"): the difference is that rule's price.
// Every benchmark ends with weft::shutdown(), so the next starts from a fresh runtime.
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <thread>
#include <vector>

#include <weft/weft.hpp>

namespace {

void BM_yield_switch(benchmark::State& state) {
  bool stop = false;
  weft::spawn([&] {
    while (!stop) weft::schedule();
  });
  for (auto _ : state) weft::schedule();
  stop = true;
  weft::run();  // the partner sees `stop` and ends
  state.counters["per_switch"] =
      benchmark::Counter(double(state.iterations()) * 2, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  weft::shutdown();
}
BENCHMARK(BM_yield_switch);

void BM_channel_round_trip(benchmark::State& state) {
  weft::channel<std::uint64_t> request, reply;
  weft::spawn([&] {
    for (;;) reply.send(request.receive() + 1);
  });
  std::uint64_t i = 0;
  for (auto _ : state) {
    request.send(i);
    i = reply.receive();
  }
  benchmark::DoNotOptimize(i);
  weft::shutdown();  // kills the echo tasklet, blocked in receive()
}
BENCHMARK(BM_channel_round_trip);

void BM_spawn_run_trivial(benchmark::State& state) {
  for (auto _ : state) {
    weft::spawn([] {});
    weft::run();
  }
  weft::shutdown();
}
BENCHMARK(BM_spawn_run_trivial);

void BM_spawn_blocking(benchmark::State& state) {
  const std::int64_t batch = state.range(0);
  std::optional<weft::channel<int>> shared;  // made anew for each runtime
  shared.emplace();
  std::int64_t pending = 0;
  for (auto _ : state) {
    weft::spawn([ch = *shared]() mutable { ch.receive(); });
    weft::run();
    if (++pending == batch) {
      state.PauseTiming();
      shared.reset();
      weft::shutdown();
      shared.emplace();
      pending = 0;
      state.ResumeTiming();
    }
  }
  shared.reset();
  weft::shutdown();
}
BENCHMARK(BM_spawn_blocking)->Arg(1 << 14);  // stays well below vm.max_map_count with guard pages

// kill() of a tasklet blocked in receive(): the switch into it, the unwinding of its frames up to
// the tasklet's entry (weft::tasklet_exit, SEMANTICS.md §3), the switch back. Tasklets are made in
// untimed batches of state.range(0).
void BM_kill_blocked(benchmark::State& state) {
  const std::size_t batch = static_cast<std::size_t>(state.range(0));
  weft::channel<int> never;
  std::vector<weft::tasklet> blocked;
  blocked.reserve(batch);
  for (auto _ : state) {
    if (blocked.empty()) {
      state.PauseTiming();
      for (std::size_t i = 0; i < batch; ++i) blocked.push_back(weft::spawn([ch = never]() mutable { ch.receive(); }));
      weft::run();
      state.ResumeTiming();
    }
    blocked.back().kill();
    blocked.pop_back();
  }
  blocked.clear();
  weft::shutdown();
}
BENCHMARK(BM_kill_blocked)->Arg(1024);

void BM_try_receive_empty(benchmark::State& state) {
  weft::channel<int> ch;
  int out = 0;
  for (auto _ : state) {
    auto s = ch.try_receive(out);
    benchmark::DoNotOptimize(s);
  }
  weft::shutdown();
}
BENCHMARK(BM_try_receive_empty);

}  // namespace

void BM_delete_outside_transaction(benchmark::State& state) {
  weft::atomically([] {});  // this thread uses the STM
  std::atomic<bool> registered{false}, stop{false};
  std::thread idle;
  if (state.range(0) == 2) {
    idle = std::thread([&] {
      weft::atomically([] {});
      registered = true;
      while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
    while (!registered) std::this_thread::yield();
  }
  struct object {
    std::uint64_t words[8];
  };
  for (auto _ : state) {
    auto* o = new object{};
    benchmark::DoNotOptimize(o);
    delete o;
  }
  stop = true;
  if (idle.joinable()) idle.join();
}
BENCHMARK(BM_delete_outside_transaction)->Arg(1)->Arg(2);

BENCHMARK_MAIN();
