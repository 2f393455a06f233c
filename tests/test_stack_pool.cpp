// gc/: the stack pool.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>

#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

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

bool page_resident(const char* p);

// Whether this kernel populates pages ahead of their first touch (MADV_POPULATE_WRITE, Linux 5.14).
bool populate_supported() {
  const std::size_t page = weft::detail::page_size();
  void* probe = ::mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(probe != MAP_FAILED);
  const bool ok = ::madvise(probe, page, MADV_POPULATE_WRITE) == 0;
  ::munmap(probe, page);
  return ok;
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

TEST_CASE("stack tops are coloured: the first 4096 stacks of a pool over a whole page and the rest over the upper 1.5 KiB of it", "[unit][gc]") {
  // Issue 11 §6: 64 KiB-aligned tops put the hot frames of every tasklet in the same cache sets. The
  // set a line goes to in a physically indexed cache depends, within a page, on its offset: tops
  // spread over the upper 1.5 KiB only leave the frames of 2,000 tasklets half of the offsets (the
  // sieve of 2,000 primes 12% slower than with the whole page). A top low in its page puts the
  // frames below it (a kill's unwinder: 2.6 KiB) on a second page, which is populated with the first
  // so that it costs no page fault; past 4096 stacks (too many for their tops to stay in a cache)
  // the tops keep to the upper 1.5 KiB, one page per stack.
  const std::size_t page = weft::detail::page_size();
  const bool populated = populate_supported();
  for (bool guard : {false, true}) {
    stack_pool pool(64 * 1024, guard);
    std::vector<weft::detail::stack_extent> stacks;
    std::set<std::uintptr_t> wide, narrow;
    std::size_t low_tops = 0, low_tops_resident_below = 0;
    for (int i = 0; i < 4096 + 64; ++i) {
      stacks.push_back(pool.allocate());
      const weft::detail::stack_extent s = stacks.back();
      CHECK(s.size >= pool.stack_size());  // the usable size is never less than asked
      const auto top = reinterpret_cast<std::uintptr_t>(s.top());
      CHECK(top % 64 == 0);
      const std::uintptr_t below_top = (top - 1) % page + 1;  // bytes of the top's page below it
      if (i < 4096) {
        wide.insert(below_top);
        if (below_top < 2624) {
          ++low_tops;
          if (populated && page_resident(s.top() - below_top - 1)) ++low_tops_resident_below;
        }
      } else {
        narrow.insert(below_top);
        CHECK(below_top >= 2624);  // room for a blocked tasklet's frames and the unwinder that kills it
      }
    }
    CHECK(wide.size() == 64);
    CHECK(narrow.size() == 24);
    CHECK(low_tops == 4096 / 64 * 40);  // 40 of every 64 colours leave less than 2,624 bytes
    if (populated) CHECK(low_tops_resident_below == low_tops);
    // A stack keeps its colour through the free list.
    const weft::detail::stack_extent low = stacks[63], high = stacks[4096 + 5];
    pool.release(low);
    pool.release(high);
    const weft::detail::stack_extent high_again = pool.allocate(), low_again = pool.allocate();
    CHECK((high_again.base == high.base && high_again.size == high.size));
    CHECK((low_again.base == low.base && low_again.size == low.size));
    for (auto& s : stacks) pool.release(s);
  }
}

TEST_CASE("a never-used stack comes with its top page already in memory and nothing below it", "[unit][gc]") {
  // Issue 11 §6: the first switch into a fresh stack used to fault its top page in (17-20 us on this
  // project's VM); allocate() populates it. mincore() tells which pages are resident.
  const std::size_t page = weft::detail::page_size();
  if (!populate_supported()) {
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

namespace {
// Whether this kernel populates pages of the calling process through process_madvise (Linux 6.13).
bool batch_populate_supported() {
  const std::size_t page = weft::detail::page_size();
  void* probe = ::mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(probe != MAP_FAILED);
  bool ok = false;
  if (const long fd = ::syscall(SYS_pidfd_open, ::getpid(), 0); fd >= 0) {
    iovec v[2] = {{probe, page}, {static_cast<char*>(probe) + page, page}};
    ok = ::syscall(SYS_process_madvise, fd, v, 2, MADV_POPULATE_WRITE, 0u) >= 0;
    ::close(static_cast<int>(fd));
  }
  ::munmap(probe, 2 * page);
  return ok;
}

bool page_resident(const char* p) {
  const std::size_t page = weft::detail::page_size();
  unsigned char v = 0;
  auto* start = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(p) / page * page);
  REQUIRE(::mincore(start, page, &v) == 0);
  return (v & 1) != 0;
}
}  // namespace

TEST_CASE("fresh stacks are populated a batch at a time, and no further ahead", "[unit][gc]") {
  // One process_madvise call for populate_batch top pages instead of one madvise each: 100,000
  // stacks, 0.23 s of calls -> 0.07 s on this project's VM (hackysack K=100,000 starts 100,000).
  if (!batch_populate_supported()) {
    WARN("this kernel does not populate through process_madvise (Linux < 6.13): one call per stack; not checked");
    return;
  }
  constexpr std::size_t batch = stack_pool::populate_batch;
  for (bool guard : {false, true}) {
    stack_pool pool(64 * 1024, guard);
    std::vector<weft::detail::stack_extent> stacks;
    stacks.push_back(pool.allocate());
    stacks.push_back(pool.allocate());
    // Slots are `stride` apart; a top sits in its slot's last page (colours move it within the page).
    const std::size_t stride = static_cast<std::size_t>(stacks[1].base - stacks[0].base);
    REQUIRE(stride >= 64 * 1024);
    const char* first_top = stacks[0].top();
    // Handed out in address order: the stacks of the first batch were populated with the first.
    for (std::size_t k = 2; k < batch; ++k) CHECK(page_resident(first_top - 1 + k * stride));
    // Nothing past the batch (the first slab holds 64 stacks): memory no tasklet asked for.
    for (std::size_t k = batch; k < 2 * batch; ++k) CHECK_FALSE(page_resident(first_top - 1 + k * stride));
    // The next batch comes with the first stack past the first one.
    while (stacks.size() <= batch) stacks.push_back(pool.allocate());
    CHECK(reinterpret_cast<std::uintptr_t>(stacks.back().base) ==
          reinterpret_cast<std::uintptr_t>(stacks[0].base + batch * stride));
    for (std::size_t k = batch; k < 2 * batch; ++k) CHECK(page_resident(first_top - 1 + k * stride));
    for (auto& s : stacks) pool.release(s);
  }
}

TEST_CASE("a child process made by fork populates its own stacks, not its parent's", "[unit][gc]") {
  // The pool populates through a pidfd of the process, opened once; a child inherits the parent's.
  if (!batch_populate_supported()) {
    WARN("this kernel does not populate through process_madvise (Linux < 6.13); not checked");
    return;
  }
  {
    stack_pool warm(64 * 1024, false);  // the parent opens its pidfd
    warm.release(warm.allocate());
  }
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    stack_pool pool(64 * 1024, false);
    auto a = pool.allocate();
    auto b = pool.allocate();
    const bool ok = page_resident(a.top() - 1) && page_resident(b.top() - 1) &&
                    page_resident(a.top() - 1 + 2 * (b.base - a.base));  // the batch's third
    std::_Exit(ok ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
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
