// Side tables of tvars: names (given at construction) and the source location of the last committed
// write (kept only while an observer is installed, for conflict records). Sharded hash maps, each
// under its own mutex; their memory never comes from a transaction's allocation log.
#include <array>
#include <atomic>
#include <mutex>
#include <unordered_map>

#include "side_tables.hpp"
#include "weft/detail/alloc_log.hpp"
#include "weft/detail/stm_core.hpp"

namespace weft::detail {

std::atomic<bool> side_tables_used{false};

namespace {
struct shard {
  std::mutex lock;  // protects the maps; held only for a lookup or an update
  std::unordered_map<const void*, const char*> names;
  std::unordered_map<const void*, std::uintptr_t> writes;
  // names.size() + writes.size(), stored under `lock`, read without it by tvar_gone: once one tvar is
  // named, every tvar's destruction comes here, and most find their shard empty (the bank sample's
  // million accounts, with two named counters beside them, took a lock and two hash lookups each:
  // ~130 instructions a tvar). A tvar's own entry was stored before its destruction in
  // happens-before order (its construction, or a commit that the destroying thread synchronised
  // with), so a relaxed load of 0 proves it has none.
  std::atomic<std::size_t> entries{0};
  void recount() noexcept { entries.store(names.size() + writes.size(), std::memory_order_relaxed); }
};
constexpr std::size_t shard_count = 64;

// Made on first use (a named tvar at namespace scope may be constructed before this file's
// statics), never destroyed (tvars with static storage may be destroyed after them).
std::array<shard, shard_count>& shards() {
  static auto* s = new std::array<shard, shard_count>;
  return *s;
}

shard& shard_of(const void* p) noexcept {
  auto x = reinterpret_cast<std::uintptr_t>(p) >> 4;
  return shards()[(x ^ (x >> 7)) % shard_count];
}
}  // namespace

void tvar_named(const void* var, const char* name) {
  alloc_log_pause pause;
  side_tables_used.store(true, std::memory_order_relaxed);
  shard& s = shard_of(var);
  std::lock_guard g(s.lock);
  s.names[var] = name;
  s.recount();
}

void tvar_gone(const void* var) noexcept {
  shard& s = shard_of(var);
  if (s.entries.load(std::memory_order_relaxed) == 0) return;
  alloc_log_pause pause;
  std::lock_guard g(s.lock);
  s.names.erase(var);
  s.writes.erase(var);
  s.recount();
}

const char* tvar_name(const void* var) noexcept {
  if (!side_tables_used.load(std::memory_order_relaxed)) return nullptr;
  shard& s = shard_of(var);
  std::lock_guard g(s.lock);
  auto it = s.names.find(var);
  return it == s.names.end() ? nullptr : it->second;
}

void note_write(const void* var, std::uintptr_t location) noexcept {
  alloc_log_pause pause;
  shard& s = shard_of(var);
  std::lock_guard g(s.lock);
  try {
    s.writes[var] = location;
  } catch (...) {
  }
  s.recount();
}

std::uintptr_t last_write_of(const void* var) noexcept {
  shard& s = shard_of(var);
  std::lock_guard g(s.lock);
  auto it = s.writes.find(var);
  return it == s.writes.end() ? 0 : it->second;
}

}  // namespace weft::detail
