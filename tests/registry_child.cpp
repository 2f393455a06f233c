// CTest `registry_agents_*` (tests/CMakeLists.txt): a porting pattern in which each agent's state lives
// on its tasklet's stack, registered in a global map by its constructor and removed by its destructor;
// other tasklets find a target through the map and hit it; dead agents are respawned by main.
//
// At 2 workers with the guard off every run hung: a speculative segment that looked an agent up before
// its tasklet ended (in serial order) read the agent's tvar after the stack had been reused by a new
// tasklet, where a return address looked like a held lock, and waited for ever. Its lookup was stale,
// so its read set was no longer valid: it must abort (stm/src/transaction.cpp, read_slow). The agent's
// layout is the one that showed it (a newcomer's program, round 4): other layouts put other words there.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include <weft/weft.hpp>

namespace {
struct agent;
weft::tvar<std::map<int, agent*>>* registry;
int agents_made = 600;  // argv[1]: sanitizer builds run fewer

struct agent {
  int id;
  weft::tvar<int> hp;
  weft::tvar<std::string> name;
  weft::tvar<std::map<int, int>> notes;
  agent(int i, int h) : id(i), hp(h) {
    weft::atomically([&] { registry->modify([&](auto& m) { m[id] = this; }); });
  }
  ~agent() {
    weft::atomically([&] { registry->modify([&](auto& m) { m.erase(id); }); });
  }
};

std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 31;
  x *= 0x9E3779B97F4A7C15ULL;
  return x ^ (x >> 29);
}

void live(int id, int gen) {
  agent a(id, 20 + (id + gen) % 10);
  for (std::uint64_t step = 0;; ++step) {
    const std::uint64_t h = mix(static_cast<std::uint64_t>(id) * 1315423911u + step * 2654435761u + static_cast<std::uint64_t>(gen));
    const int target = static_cast<int>(h % static_cast<std::uint64_t>(2 * agents_made));
    weft::atomically([&] {
      agent* t = registry->view([&](const std::map<int, agent*>& m) -> agent* {
        auto it = m.lower_bound(target);
        return it == m.end() ? nullptr : it->second;
      });
      if (t && t != &a) t->hp.set(t->hp.get() - static_cast<int>(1 + h % 4));
    });
    if (a.hp.get() <= 0) return;
    weft::schedule();
  }
}
}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) agents_made = std::atoi(argv[1]);
  registry = new weft::tvar<std::map<int, agent*>>();
  std::map<int, weft::tasklet> agents;
  std::map<int, int> generation;
  for (int i = 0; i < agents_made; ++i) agents[2 * i] = weft::spawn([i] { live(2 * i, 0); });
  for (int round = 0; round < 8; ++round) {
    for (int k = 0; k < 3; ++k) weft::schedule();
    int alive = 0, respawned = 0;
    for (auto& [id, t] : agents) {
      if (t.alive()) {
        ++alive;
        continue;
      }
      const int gen = ++generation[id], i = id;
      t = weft::spawn([i, gen] { live(i, gen); });
      ++respawned;
    }
    // Every live agent is registered, and only they (main reads at the head: the serial answer).
    weft::print("round {}: alive {} registered {} respawned {}\n", round, alive, registry->get().size(), respawned);
  }
  for (auto& [id, t] : agents)
    if (t.alive()) t.kill();
  weft::print("end: registered {}\n", registry->get().size());
  delete registry;
  return 0;
}
