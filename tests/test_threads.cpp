// SEMANTICS.md §5b: channels shared by tasklets of several threads, each thread with its own runtime.
// A partner is woken in its own thread; a thread whose main has nothing to run waits for the others
// (sleeping) while another thread that uses weft is alive; deadlock only when nobody is left to wake
// anybody; a tasklet whose thread has ended cannot be woken ("tasklet has no thread").
//
// Before a thread blocks, every thread that will wake it must already use weft (as in Stackless: a
// thread counts once it has used the API), hence the latches below.
#include <atomic>
#include <chrono>
#include <latch>
#include <array>
#include <numeric>
#include <thread>

#include "support.hpp"

using namespace weft;
using weft::test::fresh_runtime;

namespace {

// Polls `done` (outside any tasklet switch: a plain loop of the thread's main) for up to a minute,
// then stops the test program. No Catch2 assertion: these run on several threads at once, and
// Catch2's assertion macros are not thread-safe.
template <class F>
void wait_until(F done) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (!done()) {
    if (std::chrono::steady_clock::now() > give_up) {
      std::fprintf(stderr, "test_threads: waited a minute for a condition that never held\n");
      std::abort();
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

}  // namespace

TEST_CASE_METHOD(fresh_runtime, "5b a thread's main receives what another thread sends", "[unit][threads]") {
  // The oracle's observation: T's main blocks in receive() on a channel only M sends to; each of M's
  // sends completes at once (balance -1 before, 0 after) and T's main receives 0, 1, 2 in order.
  channel<int> ch;
  getruncount();  // this thread uses weft before T may block
  std::vector<int> got;  // written by T's main only, read after join
  std::atomic<int> looked{0};  // T receives again only once M has read the balance after its send
  std::thread t([&] {
    for (int i = 0; i < 3; ++i) {
      got.push_back(ch.receive());
      wait_until([&] { return looked > i; });
    }
    weft::shutdown();
  });
  std::vector<std::pair<int, int>> balances;
  for (int i = 0; i < 3; ++i) {
    wait_until([&] { return ch.balance() == -1; });
    const int before = ch.balance();
    ch.send(i);
    balances.emplace_back(before, ch.balance());
    ++looked;
  }
  t.join();
  CHECK(got == std::vector<int>{0, 1, 2});
  CHECK(balances == std::vector<std::pair<int, int>>(3, {-1, 0}));
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "5b a thread counts from its creation, before it uses weft", "[unit][threads]") {
  // This main blocks before the new thread has made any weft call: it must wait for it (Stackless
  // waits while any other thread lives), not report a deadlock.
  channel<int> ch;
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ch.send(9);
  });
  CHECK(ch.receive() == 9);
  t.join();
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "5b a waiting main gets the deadlock error when a thread ends without using weft", "[unit][threads][deadlock]") {
  channel<int> ch;
  // Main (most likely) waits for t by the time t ends; if not, it finds nobody alive: same error,
  // §4.1's (SEMANTICS.md §5b: "the usual deadlock"; newcomer round 18 got §4.2's after a wait).
  std::thread t([] { std::this_thread::sleep_for(std::chrono::milliseconds(30)); });
  test::require_throws_message<deadlock_error>([&] { ch.receive(); }, "Deadlock: the last runnable tasklet cannot be blocked.");
  t.join();
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "5b a tasklet of a thread whose main waits elsewhere is woken", "[unit][threads]") {
  channel<int> a;
  getruncount();
  int total = 0;
  std::thread t([&] {
    channel<int> done;
    spawn([&] {
      const int x = a.receive();
      const int y = a.receive();
      done.send(x + y);
    });
    total = done.receive();  // main blocks; its tasklet then blocks on a: the thread waits
    weft::shutdown();
  });
  wait_until([&] { return a.balance() == -1; });
  a.send(20);
  wait_until([&] { return a.balance() == -1; });
  a.send(22);
  t.join();
  CHECK(total == 42);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "5b a send from another thread wakes a tasklet here, in this thread's ring", "[unit][threads]") {
  channel<int> ch;
  tvar<int> got{0};
  tasklet r = spawn([&] { got.set(ch.receive()); });
  run();  // r waits on ch
  REQUIRE(ch.balance() == -1);
  std::thread th([&] {
    ch.send(7);  // r is woken in its own thread: th goes on at once
    weft::shutdown();
  });
  th.join();
  CHECK(ch.balance() == 0);
  CHECK(got.get() == 0);  // r runs only when this thread schedules
  run();
  CHECK(got.get() == 7);
  CHECK(!r.alive());
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "5b waiters of several threads are served in FIFO order", "[unit][threads]") {
  channel<int> ch;
  tvar<int> m1{0}, m2{0};
  std::atomic<int> t1{0};
  std::latch ready(2);
  spawn([&] { m1.set(ch.receive()); });
  run();  // first in the queue: a tasklet of this thread
  std::thread t([&] {
    ready.count_down();
    wait_until([&] { return ch.balance() == -1; });
    t1 = ch.receive();  // second: T's main
    weft::shutdown();
  });
  ready.arrive_and_wait();
  wait_until([&] { return ch.balance() == -2; });
  spawn([&] { m2.set(ch.receive()); });
  run();  // third: another tasklet of this thread
  REQUIRE(ch.balance() == -3);
  std::thread s([&] {
    for (int v = 1; v <= 3; ++v) ch.send(v);
    weft::shutdown();
  });
  s.join();
  t.join();
  run();
  CHECK(m1.get() == 1);
  CHECK(t1 == 2);
  CHECK(m2.get() == 3);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "5b a waiting main gets the deadlock error when the last other thread ends", "[unit][threads][deadlock]") {
  channel<int> ch;
  getruncount();
  std::latch ready(2);
  std::thread t([&] {
    getruncount();  // T uses weft: this thread's main may wait for it
    ready.count_down();
    wait_until([&] { return ch.balance() == -1; });
  });  // T ends without sending: nobody is left
  ready.arrive_and_wait();
  test::require_throws_message<deadlock_error>([&] { ch.receive(); }, "Deadlock: the last runnable tasklet cannot be blocked.");
  t.join();
  CHECK(ch.balance() == 0);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "5b when every thread waits, the last to wait gets the deadlock error", "[unit][threads][deadlock]") {
  // Which thread begins to wait last is decided by the registry, not by what the other thread can
  // see: main is in a's queue (balance -1) a little before it counts as waiting, so T, seeing the
  // balance, may still begin to wait first (once in ~500 loaded TSan runs). Whichever of the two is
  // told wakes the other; exactly one is told, with §4.1's message.
  channel<int> a, b;
  getruncount();
  std::string what_t, what_main;
  int t_got = 0, main_got = 0;
  std::latch ready(2);
  std::thread t([&] {
    getruncount();
    ready.count_down();
    wait_until([&] { return a.balance() == -1; });  // this thread's main waits on a
    try {
      t_got = b.receive();  // nobody sends on b unless main was told: every live thread would wait
    } catch (const deadlock_error& e) {
      what_t = e.what();
      a.send(5);
    }
    weft::shutdown();
  });
  ready.arrive_and_wait();
  try {
    main_got = a.receive();
  } catch (const deadlock_error& e) {
    what_main = e.what();
    b.send(7);
  }
  t.join();
  INFO("told: T '" << what_t << "', main '" << what_main << "'");
  CHECK(what_t.empty() != what_main.empty());
  CHECK(what_t + what_main == "Deadlock: the last runnable tasklet cannot be blocked.");
  CHECK((what_t.empty() ? t_got : main_got) == (what_t.empty() ? 7 : 5));
  CHECK(a.balance() == 0);
  CHECK(b.balance() == 0);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "5b a blocked main gets the deadlock error when its ring empties by a death, other threads or not",
                 "[unit][threads][deadlock]") {
  // Observed on Stackless 3.7.5 (round 9): a thread's main that blocks with nothing else runnable
  // waits for the other threads (above), but one that blocked while a tasklet of its own was still
  // runnable is woken with §4.2's error as soon as that tasklet ends, although another thread could
  // still receive; its next send, alone, waits for that thread as usual.
  channel<std::string> back;
  getruncount();
  std::atomic<bool> first_failed{false};
  std::string first, second;
  std::thread t([&] {
    spawn([] {
      schedule();
      schedule();
    });
    try {
      back.send("hello");
      first = "sent";
    } catch (const deadlock_error& e) {
      first = e.what();
    }
    first_failed = true;
    back.send("again");  // nothing else here: waits for the main thread's receive
    second = "sent";
    weft::shutdown();
  });
  while (!first_failed) std::this_thread::yield();
  CHECK(back.receive() == "again");
  t.join();
  CHECK(first == "the main tasklet is sending without a receiver available.");
  CHECK(second == "sent");
  CHECK(back.balance() == 0);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "5b a tasklet killed by its thread's end still stands in its channel's queue",
                 "[unit][threads]") {
  // Round 9, against Stackless 3.7.5: a thread's tasklet blocked on a channel when the thread ends
  // stays in the queue (balance -1) and a partner's operation throws "tasklet has no thread". weft
  // kills it at the thread's end so that its stack unwinds (its destructors run, §6), which took it
  // out of the queue: the balance went to 0 and main's send ended in a deadlock error (or waited
  // for ever beside another live thread). A ghost now keeps its place.
  channel<int> ch;
  getruncount();
  std::atomic<int> unwound{0};
  std::thread t([&] {
    spawn([&] {
      struct on_unwind {
        std::atomic<int>* n;
        ~on_unwind() { ++*n; }
      } u{&unwound};
      ch.receive();
    });
    run();
  });
  t.join();
  CHECK(unwound == 1);  // the thread's end unwound its stack
  CHECK(ch.balance() == -1);
  test::require_throws_message<std::runtime_error>([&] { ch.send(1); }, "tasklet has no thread");
  int two = 2;
  test::require_throws_message<std::runtime_error>([&] { ch.try_send(two); }, "tasklet has no thread");
  CHECK(ch.balance() == -1);  // nothing changed

  // A channel nobody else holds keeps no ghost; an explicit shutdown() leaves none either.
  std::thread u([] {
    channel<int> own;
    spawn([own] { own.receive(); });
    run();
  });
  u.join();
  channel<int> local;
  spawn([local] { local.receive(); });
  run();
  weft::shutdown();
  CHECK(local.balance() == 0);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "5b a tasklet whose thread has ended cannot be woken", "[unit][threads]") {
  channel<int> ch;
  std::thread t([&] {
    spawn([&] {
      for (;;) {  // refuses to die at the thread's shutdown: stays blocked on ch
        try {
          ch.receive();
        } catch (const tasklet_exit&) {
        }
      }
    });
    run();
  });
  t.join();
  REQUIRE(ch.balance() == -1);
  test::require_throws_message<std::runtime_error>([&] { ch.send(1); }, "tasklet has no thread");
  CHECK(ch.balance() == -1);  // nothing changed
  int two = 2;
  test::require_throws_message<std::runtime_error>([&] { ch.try_send(two); }, "tasklet has no thread");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "5b stress: tasklets of four threads trade over shared channels, nothing lost", "[stress][threads]") {
  // A seeded plan: every sender tasklet sends its values on channels picked at random; each channel's
  // sends are split among receiver tasklets spread over the threads. Conserved: the count and sum of
  // what was received equal what was sent; each receiver sees each sender's values in sending order.
  const std::uint64_t seed = test::seed_from_env("5b stress");
  constexpr int threads = 4, senders = 6, sends = 40, channels = 5, receivers_per_channel = 5;
  std::mt19937_64 rng(seed);
  struct send_step { int channel; long value; };
  std::vector<std::vector<send_step>> plan(threads * senders);
  std::vector<int> per_channel(channels, 0);
  long sent_sum = 0;
  for (int s = 0; s < threads * senders; ++s)
    for (int i = 0; i < sends; ++i) {
      const int k = static_cast<int>(rng() % channels);
      plan[s].push_back({k, s * 1000 + i});  // sender s's i-th value
      ++per_channel[k];
      sent_sum += s * 1000 + i;
    }
  struct receiver { int channel, count, thread; };
  std::vector<receiver> receivers;
  for (int k = 0; k < channels; ++k)
    for (int j = 0; j < receivers_per_channel; ++j) {
      const int count = per_channel[k] / receivers_per_channel + (j < per_channel[k] % receivers_per_channel);
      receivers.push_back({k, count, static_cast<int>(rng() % threads)});
    }
  std::vector<channel<long>> chans(channels);
  std::latch ready(threads);
  std::vector<long> received_sum(threads, 0), received_count(threads, 0), order_errors(threads, 0);
  auto body = [&](int me) {
    getruncount();
    ready.arrive_and_wait();  // every thread uses weft before any may wait
    tvar<long> sum{0}, count{0}, disorder{0};
    channel<int> done;
    // A tasklet's last act is done.send(1), then it ends. Preference 1 (the sender goes on) lets it
    // end before main resumes, and main's receive of a waiting sender runs that sender to its end at
    // once: main is never blocked on `done` when a tasklet ends with only tasklets waiting for other
    // threads left in the ring — Stackless wakes main with §4.2's deadlock error there, other
    // threads or not (observed on the interpreter; weft does the same).
    done.preference(1);
    int started = 0;
    for (int s = me * senders; s < (me + 1) * senders; ++s, ++started)
      spawn([&, s] {
        for (const send_step& step : plan[s]) {
          chans[step.channel].send(step.value);
          if (step.value % 7 == 0) schedule();
        }
        done.send(1);
      });
    for (const receiver& rv : receivers) {
      if (rv.thread != me) continue;
      ++started;
      spawn([&, rv] {
        // On the tasklet's stack, not in a std::map: heap state that lives across switch points
        // would need a tvar (DESIGN.md §5), this array is rolled back with the stack.
        std::array<long, threads * senders> last;  // sender -> its last value seen here
        last.fill(-1);
        long local_sum = 0, bad = 0;
        for (int i = 0; i < rv.count; ++i) {
          const long v = chans[rv.channel].receive();
          long& previous = last[static_cast<std::size_t>(v / 1000)];
          if (previous >= v) ++bad;
          previous = v;
          local_sum += v;
        }
        atomically([&] {
          sum.set(sum.get() + local_sum);
          count.set(count.get() + rv.count);
          disorder.set(disorder.get() + bad);
        });
        done.send(1);
      });
    }
    for (int i = 0; i < started; ++i) done.receive();
    received_sum[me] = sum.get();
    received_count[me] = count.get();
    order_errors[me] = disorder.get();
    weft::shutdown();
  };
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back(body, i);
  for (auto& th : pool) th.join();
  CHECK(std::accumulate(received_count.begin(), received_count.end(), 0L) == long{threads} * senders * sends);
  CHECK(std::accumulate(received_sum.begin(), received_sum.end(), 0L) == sent_sum);
  CHECK(std::accumulate(order_errors.begin(), order_errors.end(), 0L) == 0);
  for (auto& c : chans) CHECK(c.balance() == 0);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "5b kills race with wake-ups from another thread", "[stress][threads]") {
  // T kills its receivers one by one while M sends to them with try_send: a receiver may be woken
  // by M's send and killed before it runs (its value is then lost, as in Stackless, where the kill
  // reaches it before it returns from receive). Invariant: 0 <= sent - received <= kills, every
  // receiver dies, and the channel ends with nobody waiting. No crash, no hang.
  const std::uint64_t seed = test::seed_from_env("5b kills race");
  constexpr int receivers = 40;
  channel<int> ch;
  std::atomic<bool> done{false};
  std::atomic<long> received_total{0};
  std::atomic<int> still_alive{0};  // checked by main: Catch2's macros are for one thread at a time
  std::latch ready(2);
  std::thread t([&] {
    std::mt19937_64 rng(seed);
    tvar<long> received{0};
    std::vector<tasklet> rs;
    for (int i = 0; i < receivers; ++i)
      rs.push_back(spawn([&] {
        for (;;) {
          ch.receive();
          atomically([&] { received.set(received.get() + 1); });
        }
      }));
    // All wait on ch before M starts sending. run() returns only when the ring is empty: with M
    // already waking receivers as fast as they block again, it need not return (under TSan, where M
    // ran faster relative to T, it did not for minutes — as it would not in Stackless either).
    run();
    ready.arrive_and_wait();
    for (int i = 0; i < receivers; ++i) {
      // Let woken receivers count: schedule(), not run(), which would not return while M keeps
      // waking receivers faster than they block again (under TSan it did not, for minutes).
      for (int k = static_cast<int>(rng() % 4); k > 0; --k) schedule();
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
      rs[static_cast<std::size_t>(rng() % rs.size())].kill();
      if (rng() % 2) rs.back().kill();
    }
    for (auto& r : rs) r.kill();
    run();
    received_total = received.get();
    for (auto& r : rs) still_alive += r.alive();
    done = true;
    weft::shutdown();
  });
  ready.arrive_and_wait();
  long sent = 0;
  while (!done) {
    int v = 1;
    if (ch.try_send(v) == channel<int>::status::ok)
      ++sent;
    else
      std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  t.join();
  CHECK(sent >= received_total.load());
  CHECK(sent - received_total.load() <= receivers);
  CHECK(still_alive == 0);
  CHECK(ch.balance() == 0);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "5b a thread that starts threads before it uses weft counts as one that may wake them", "[unit][threads]") {
  // A newcomer's program: this thread (no runtime: the fixture shut it down) makes the channels,
  // starts two workers that block on `jobs` at once, and only then uses weft (spawns the producer,
  // receives the results). The workers must wait for it, not report a deadlock: when the first
  // worker blocked before the second was started it found nobody alive (§4.1's error); when both
  // blocked before this thread used weft, the second found every live runtime waiting. Both orders
  // are forced below (the workers announce that they are about to block; this thread lets them).
  constexpr int rounds = 12, jobs_per_round = 10;
  for (int round = 0; round < rounds; ++round) {
    weft::shutdown();  // no runtime here while the workers start and block
    const bool staggered = round % 2 == 0;  // the first worker blocks before the second exists
    channel<int> jobs, results, fin;
    std::atomic<int> about_to_block{0}, errors{0};
    std::vector<std::thread> workers;
    auto worker = [&about_to_block, &errors, jobs, results] {
      try {
        for (bool first = true;; first = false) {
          if (first) ++about_to_block;
          const int j = jobs.receive();
          if (j < 0) break;
          results.send(j * j);
        }
      } catch (const std::exception&) {
        ++errors;
      }
    };
    for (int t = 0; t < 2; ++t) {
      workers.emplace_back(worker);
      if (staggered || t == 1) {
        wait_until([&] { return about_to_block == t + 1; });
        std::this_thread::sleep_for(std::chrono::milliseconds(2));  // it blocks (or fails) meanwhile
      }
    }
    long sum = 0;
    std::string main_error;
    try {
      spawn([jobs, fin] {
        for (int j = 0; j < jobs_per_round; ++j) jobs.send(j);
        for (int i = 0; i < 2; ++i) jobs.send(-1);
        fin.send(0);
      });
      for (int i = 0; i < jobs_per_round; ++i) sum += results.receive();
      fin.receive();
    } catch (const std::exception& e) {
      main_error = e.what();
    }
    for (auto& th : workers) th.join();
    INFO("round " << round << (staggered ? " (staggered)" : " (both blocked first)"));
    CHECK(errors == 0);
    CHECK(main_error == "");
    CHECK(sum == 285);
    if (errors != 0 || !main_error.empty()) break;  // one failing round says it all
  }
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "5b a wake-up from a thread that ends at once is not lost to a deadlock error", "[unit][threads]") {
  // Main is about to block with nothing else runnable here while another thread wakes P (ours) and
  // ends. If the wake-up arrives after main's operation took its mail but before it asked whether
  // anybody could still wake it, nobody is alive any more, yet P is in the mail: no deadlock.
  // (Found in CI: 1 run in ~25 of the test above under TSan.) The race is forced by repetition.
  constexpr int rounds = 400;
  int delivered = 0;
  for (int round = 0; round < rounds; ++round) {
    channel<int> a, b;
    spawn([a, b] { b.send(a.receive()); });
    schedule();  // P blocks on a
    std::thread t([a, round] { a.send(round); });
    std::string error;
    try {
      delivered += b.receive() == round;
    } catch (const std::exception& e) {
      error = e.what();
    }
    t.join();
    INFO("round " << round);
    REQUIRE(error == "");
  }
  CHECK(delivered == rounds);
  check_clean();
}
