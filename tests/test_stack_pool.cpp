// gc/: the stack pool.
#include <cstdint>
#include <cstdio>
#include <set>
#include <string>

#include <sys/mman.h>

#include <weft/gc.hpp>

#include "support.hpp"

using weft::detail::stack_pool;

namespace {
// The permissions ("rw-p", "---p", ...) of the mapping that holds `addr`, from /proc/self/maps.
std::string protection_of(const void* addr) {
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  std::FILE* maps = std::fopen("/proc/self/maps", "r");
  if (!maps) return "no /proc/self/maps";
  char line[512];
  std::string found = "unmapped";
  while (std::fgets(line, sizeof line, maps)) {
    unsigned long lo = 0, hi = 0;
    char perms[8] = {};
    if (std::sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && a >= lo && a < hi) {
      found = perms;
      break;
    }
  }
  std::fclose(maps);
  return found;
}
}  // namespace

TEST_CASE("stack pool hands out page-aligned, disjoint stacks and reuses them LIFO", "[unit][gc]") {
  stack_pool pool(20000, false);
  const std::size_t page = weft::detail::page_size();
  CHECK(pool.stack_size() % page == 0);
  CHECK(pool.stack_size() >= 20000);
  std::vector<weft::detail::stack_extent> stacks;
  std::set<char*> bases;
  for (int i = 0; i < 300; ++i) {  // several slabs
    auto s = pool.allocate();
    CHECK(reinterpret_cast<std::uintptr_t>(s.base) % page == 0);
    s.top()[-1] = 1;  // usable
    s.base[0] = 1;
    bases.insert(s.base);
    stacks.push_back(s);
  }
  CHECK(bases.size() == 300);
  std::sort(stacks.begin(), stacks.end(), [](auto a, auto b) { return a.base < b.base; });
  for (std::size_t i = 1; i < stacks.size(); ++i) CHECK(stacks[i - 1].top() <= stacks[i].base);
  CHECK(pool.in_use() == 300);
  char* last = stacks.back().base;
  pool.release(stacks.back());
  CHECK(pool.allocate().base == last);  // the hot stack comes back first
  for (auto& s : stacks) pool.release(s);
  CHECK(pool.in_use() == 0);
  CHECK(pool.cached() >= 300);
  CHECK(pool.reserved_bytes() >= 300 * pool.stack_size());
}

TEST_CASE("guarded stacks have an inaccessible page below them", "[unit][gc]") {
  stack_pool pool(64 * 1024, true);
  auto a = pool.allocate();
  auto b = pool.allocate();
  CHECK(pool.guarded());
  // The guard page of the upper stack lies between the two.
  char* lower = std::min(a.base, b.base);
  char* upper = std::max(a.base, b.base);
  const std::size_t page = weft::detail::page_size();
  // (Each slot has 4 KiB of colouring room above the usable stack.)
  CHECK(upper - (lower + pool.stack_size() + 4096) == static_cast<std::ptrdiff_t>(page));
  // The kernel agrees: the guard page can be neither read nor written (a touch would be SIGSEGV); the
  // stacks on both sides of it can.
  CHECK(protection_of(upper - page).substr(0, 3) == "---");
  CHECK(protection_of(upper - 1).substr(0, 3) == "---");
  CHECK(protection_of(upper).substr(0, 2) == "rw");
  CHECK(protection_of(upper - page - 1).substr(0, 2) == "rw");
  // Unguarded pools have no such page.
  stack_pool plain(64 * 1024, false);
  auto c = plain.allocate();
  CHECK(protection_of(c.base).substr(0, 2) == "rw");
  CHECK(!plain.guarded());
  plain.release(c);
  pool.release(a);
  pool.release(b);
}

TEST_CASE("stack tops are coloured: 32 stacks use 32 different cache-line offsets in the upper half of a page", "[unit][gc]") {
  // Issue 11 §6: 64 KiB-aligned tops put the hot frames of every tasklet in the same cache sets; tops
  // low in their page made the first frames spill onto a second page (one more page fault each).
  for (bool guard : {false, true}) {
    stack_pool pool(64 * 1024, guard);
    std::vector<weft::detail::stack_extent> stacks;
    std::set<std::uintptr_t> offsets;
    for (int i = 0; i < 64; ++i) {
      stacks.push_back(pool.allocate());
      CHECK(stacks.back().size >= pool.stack_size());  // the usable size is never less than asked
      const auto top = reinterpret_cast<std::uintptr_t>(stacks.back().top());
      CHECK(top % 64 == 0);
      const std::uintptr_t below_top = (top - 1) % 4096 + 1;  // bytes of the top's page below it
      CHECK(below_top >= 2048);
      offsets.insert(below_top);
    }
    CHECK(offsets.size() == 32);
    for (auto& s : stacks) pool.release(s);
  }
}

TEST_CASE("a never-used stack comes with its top page already in memory and nothing below it", "[unit][gc]") {
  // Issue 11 §6: the first switch into a fresh stack used to fault its top page in (17-20 us on this
  // project's VM); allocate() populates it. mincore() tells which pages are resident.
  const std::size_t page = weft::detail::page_size();
  void* probe = ::mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(probe != MAP_FAILED);
  const bool supported = ::madvise(probe, page, MADV_POPULATE_WRITE) == 0;
  ::munmap(probe, page);
  if (!supported) {
    WARN("the kernel has no MADV_POPULATE_WRITE (Linux < 5.14): stacks are faulted in as before; not checked");
    return;
  }
  auto resident = [&](const char* p) {
    unsigned char v = 0;
    auto* start = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(p) / page * page);
    REQUIRE(::mincore(start, page, &v) == 0);
    return (v & 1) != 0;
  };
  for (bool guard : {false, true}) {
    stack_pool pool(64 * 1024, guard);
    std::vector<weft::detail::stack_extent> stacks;
    for (int i = 0; i < 100; ++i) {  // past the first slab (64 stacks): a fresh slab is populated too
      stacks.push_back(pool.allocate());
      const char* top = stacks.back().top();
      CHECK(resident(top - 1));
      CHECK_FALSE(resident(top - 1 - 2 * page));  // nothing below: 64 KiB per tasklet would add up
    }
    // A stack that comes back through the free list is not populated again (it is still mapped).
    pool.release(stacks.back());
    stacks.back() = pool.allocate();
    CHECK(resident(stacks.back().top() - 1));
    for (auto& s : stacks) pool.release(s);
  }
}

TEST_CASE("a control block keeps what a channel hand-off touches in its first 128 bytes", "[unit][gc]") {
  // Issue 11 §6: the blocked partner's control block is usually cold; its hand-off fields were spread
  // over four or five cache lines. (Offsets measured on an object: offsetof is not for polymorphic classes.)
  auto fn = [] {};
  auto* t = new weft::detail::bound_tasklet<decltype(fn)>(fn);  // never bound to a runtime
  const auto* base = reinterpret_cast<const char*>(t);
  auto within = [&](const auto& field) {
    const auto* f = reinterpret_cast<const char*>(&field);
    return f >= base && f + sizeof field <= base + 128;
  };
  CHECK(within(t->refs));
  CHECK(within(t->state));
  CHECK(within(t->direction));
  CHECK(within(t->remote_woken));
  CHECK(within(t->next));
  CHECK(within(t->prev));
  CHECK(within(t->owner));
  CHECK(within(t->context));
  CHECK(within(t->slot));
  CHECK(within(t->channel));
  CHECK(within(t->pending));
  CHECK(within(t->send_exception));
  CHECK(within(t->eh_globals));
  CHECK(within(t->stack));
  CHECK(!within(t->name));
  delete t;
}
