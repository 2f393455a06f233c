// samples/producer_consumer.cpp — several producers and consumers share one channel.
//
// Usage: weft_sample_producer_consumer [PRODUCERS] [CONSUMERS] [ITEMS]   (defaults 4 3 10000)
//
// Producer p sends the items p*ITEMS + 1 .. (p+1)*ITEMS on the shared `work` channel; every few items
// it yields (weft::schedule()) so that the producers interleave. Consumers receive until they get the
// stop item 0. Main runs everything until only blocked consumers are left (weft::run() returns then),
// sends one stop item per consumer, and collects each consumer's tally on a `results` channel.
// Items are conserved: every item is consumed exactly once, so the count is PRODUCERS*ITEMS and the
// sum is S(S+1)/2 with S = PRODUCERS*ITEMS, however the scheduler spreads the items.
//
// Each consumer's tally lives on its own stack and reaches main in a message, so no state is shared
// between tasklets. Output (stdout, deterministic): per-consumer counts, the totals, and
// `checksum: <sum of all items consumed>` (defaults: 800020000). Exit status 1 if items were lost.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <weft/weft.hpp>

namespace {

struct tally {
  long consumer;
  std::uint64_t items;
  std::uint64_t sum;
};

constexpr long stop_item = 0;
constexpr long yield_every = 7;  // producers yield after this many items

void produce(weft::channel<long> work, long first, long items) {
  for (long i = 0; i < items; ++i) {
    work.send(first + i);
    if ((i + 1) % yield_every == 0) weft::schedule();
  }
}

void consume(weft::channel<long> work, weft::channel<tally> results, long self) {
  tally t{self, 0, 0};
  for (long v = work.receive(); v != stop_item; v = work.receive()) {
    ++t.items;
    t.sum += static_cast<std::uint64_t>(v);
  }
  results.send(t);
}

}  // namespace

int main(int argc, char** argv) {
  long arg[3] = {4, 3, 10000};  // producers, consumers, items per producer
  if (argc > 4) {
    std::fprintf(stderr, "usage: %s [PRODUCERS] [CONSUMERS] [ITEMS]\n", argv[0]);
    return 2;
  }
  for (int i = 1; i < argc; ++i) {
    char* end = nullptr;
    arg[i - 1] = std::strtol(argv[i], &end, 10);
    if (end == argv[i] || *end != '\0' || arg[i - 1] < 1) {
      std::fprintf(stderr, "usage: %s [PRODUCERS >= 1] [CONSUMERS >= 1] [ITEMS >= 1]\n", argv[0]);
      return 2;
    }
  }
  const long producers = arg[0], consumers = arg[1], items = arg[2];

  weft::channel<long> work;
  weft::channel<tally> results;
  for (long c = 0; c < consumers; ++c) weft::spawn([=] { consume(work, results, c); });
  for (long p = 0; p < producers; ++p) weft::spawn([=] { produce(work, p * items + 1, items); });
  weft::run();  // producers run to completion; consumers end up blocked in receive()

  for (long c = 0; c < consumers; ++c) work.send(stop_item);
  std::vector<tally> by_consumer(static_cast<std::size_t>(consumers));
  for (long c = 0; c < consumers; ++c) {
    const tally t = results.receive();
    by_consumer[static_cast<std::size_t>(t.consumer)] = t;
  }
  weft::run();  // the consumers return from their last send and end

  std::uint64_t count = 0, sum = 0;
  for (const tally& t : by_consumer) {
    weft::print("consumer {}: {} items\n", t.consumer, t.items);
    count += t.items;
    sum += t.sum;
  }
  const std::uint64_t produced = static_cast<std::uint64_t>(producers) * static_cast<std::uint64_t>(items);
  const bool conserved = count == produced && sum == produced * (produced + 1) / 2;
  weft::print("produced: {}\n", produced);
  weft::print("consumed: {}\n", count);
  weft::print("conserved: {}\n", conserved ? "yes" : "NO");
  weft::print("tasklets left: {}\n", weft::resources().live_tasklets);
  weft::print("checksum: {}\n", sum);
  weft::shutdown();
  return conserved ? 0 : 1;
}
