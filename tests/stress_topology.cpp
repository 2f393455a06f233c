// Stress program for ordered mode (issue 10): 10,000 node tasklets in a random graph pass tokens
// along routes that depend on the token (a courier tasklet per hop), while spinner tasklets yield and
// main kills some of them.
// Usage: weft_stress_topology SEED [NODES] [TOKENS] [SPINNERS]
//
// Every token has an identity and a route that is a pure function of (seed, token id, the graph), so
// main recomputes what each token must carry when it arrives. Conserved and checked: every token
// reaches the sink exactly once, with the sum its route gives; the spinners' yields add up to the
// counter they keep in a tvar. The output (stdout) is the same at any worker count and with abort
// injection: CTest runs it serially and in ordered mode and compares the two outputs byte for byte.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <weft/weft.hpp>

namespace {

std::uint64_t mix(std::uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

struct token {
  std::uint32_t id;
  std::uint32_t hops_left;
  std::uint64_t sum;
};

constexpr int degree = 3;

// The next node of token `id` at node `node` with `hops_left` hops to go.
std::uint32_t next_node(const std::vector<std::uint32_t>& edges, std::uint64_t seed, std::uint32_t node,
                        std::uint32_t id, std::uint32_t hops_left) {
  return edges[node * degree + mix(seed ^ (std::uint64_t{id} << 32 | hops_left)) % degree];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s SEED [NODES] [TOKENS] [SPINNERS]\n", argv[0]);
    return 2;
  }
  const std::uint64_t seed = std::strtoull(argv[1], nullptr, 10);
  const std::uint32_t nodes = argc > 2 ? static_cast<std::uint32_t>(std::atoi(argv[2])) : 10000;
  const std::uint32_t tokens = argc > 3 ? static_cast<std::uint32_t>(std::atoi(argv[3])) : 2000;
  const int spinners = argc > 4 ? std::atoi(argv[4]) : 200;
  weft::print("seed {}: {} nodes, {} tokens, {} spinners\n", seed, nodes, tokens, spinners);

  // The graph: made by main before run(), read-only while tasklets run.
  std::vector<std::uint32_t> edges(std::size_t{nodes} * degree);
  for (std::size_t i = 0; i < edges.size(); ++i) edges[i] = static_cast<std::uint32_t>(mix(seed * 31 + i) % nodes);

  std::vector<weft::channel<token>> inbox(nodes);
  weft::channel<token> sink;
  std::vector<weft::tasklet> node_tasklets;
  for (std::uint32_t n = 0; n < nodes; ++n) {
    node_tasklets.push_back(weft::spawn([&, n] {
      for (;;) {
        token t = inbox[n].receive();
        if (t.hops_left == 0) {
          sink.send(t);
          continue;
        }
        t.sum = t.sum * 1000003 + n;
        const std::uint32_t to = next_node(edges, seed, n, t.id, t.hops_left);
        --t.hops_left;
        if (mix(seed ^ t.id ^ t.hops_left) % 4 == 0) weft::schedule();
        // A courier carries it, so that a node never blocks on a send (the graph has cycles: two
        // nodes sending to each other would wait for ever).
        weft::spawn([&inbox, to, t] { inbox[to].send(t); });
      }
    }));
  }
  weft::tvar<std::uint64_t> spins{0};
  std::vector<weft::tasklet> spinner_tasklets;
  for (int s = 0; s < spinners; ++s) {
    spinner_tasklets.push_back(weft::spawn([&] {
      std::uint64_t mine = 0;
      for (;;) {
        ++mine;
        spins.set(spins.get() + 1);  // one tvar all spinners update: conflicts on purpose
        weft::schedule();
      }
    }));
  }

  // Each token's start node and hop count, and what it must carry at the sink.
  std::vector<std::uint64_t> expected(tokens);
  std::vector<token> start(tokens);
  std::vector<std::uint32_t> start_node(tokens);
  for (std::uint32_t id = 0; id < tokens; ++id) {
    const std::uint32_t hops = 1 + static_cast<std::uint32_t>(mix(seed + id) % 40);
    start[id] = {id, hops, id};
    start_node[id] = static_cast<std::uint32_t>(mix(seed * 7 + id) % nodes);
    std::uint64_t sum = id;
    std::uint32_t node = start_node[id];
    for (std::uint32_t left = hops; left > 0; --left) {
      sum = sum * 1000003 + node;
      node = next_node(edges, seed, node, id, left);
    }
    expected[id] = sum;
  }

  // Main injects the tokens (a send blocks until the node takes it) and collects them, killing a
  // spinner now and then.
  weft::spawn([&] {
    for (std::uint32_t id = 0; id < tokens; ++id) inbox[start_node[id]].send(start[id]);
  });
  std::vector<int> arrived(tokens, 0);
  std::uint64_t wrong = 0, checksum = 0;
  int killed = 0;
  for (std::uint32_t k = 0; k < tokens; ++k) {
    const token t = sink.receive();
    ++arrived[t.id];
    if (t.sum != expected[t.id]) ++wrong;
    checksum = checksum * 31 + t.sum;
    if (k % 16 == 0 && killed < spinners) spinner_tasklets[mix(seed ^ k) % spinners].kill(), ++killed;
  }
  int twice = 0, missing = 0;
  for (int a : arrived) twice += a > 1, missing += a == 0;
  int alive_spinners = 0;
  for (auto& s : spinner_tasklets) alive_spinners += s.alive();
  for (auto& s : spinner_tasklets) s.kill();
  for (auto& n : node_tasklets) n.kill();
  weft::print("delivered once: {}, missing: {}, twice: {}, wrong sums: {}\n", tokens - missing - twice, missing,
              twice, wrong);
  weft::print("spinners killed while running: {}, alive at the end: {}, yields counted: {}\n", killed,
              alive_spinners, spins.get() > 0 ? "yes" : "no");
  weft::print("tasklets left: {}\n", weft::resources().live_tasklets);
  weft::print("checksum: {}\n", checksum);
  return (missing || twice || wrong) ? 1 : 0;
}
