// The replacement global operator new/delete and the allocation log of transactions
// (weft/detail/alloc_log.hpp). Every allocation of the program comes through here, so the path
// outside a transaction is one thread-local load and a branch on top of malloc/free.
//
// The thread-local `active` is set only by the owning thread (stm/ installs its transaction's log
// for the length of an attempt); the log belongs to that transaction.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#include <malloc.h>

#include "weft/detail/alloc_log.hpp"
#include "weft/detail/epoch.hpp"

namespace weft::detail {

__attribute__((tls_model("initial-exec"))) constinit thread_local alloc_log* active_log = nullptr;
constinit std::atomic<void (*)() noexcept> alloc_log_stop_hook{nullptr};
constinit std::atomic<bool> defer_plain_frees{false};

namespace {

template <class T>
bool grow(T*& items, std::size_t& cap, std::size_t need) noexcept {
  if (need <= cap) return true;
  std::size_t c = cap ? cap * 2 : 16;
  while (c < need) c *= 2;
  auto* n = static_cast<T*>(std::realloc(items, c * sizeof(T)));
  if (!n) return false;
  items = n;
  cap = c;
  return true;
}

inline std::size_t slot_of(const void* p, std::size_t cap) noexcept {
  auto x = reinterpret_cast<std::uintptr_t>(p);
  x ^= x >> 17;
  x *= 0x9e3779b97f4a7c15ULL;
  return (x >> 20) & (cap - 1);
}

void free_now(void* p) { std::free(p); }
}  // namespace


alloc_log::~alloc_log() {
  std::free(allocs_);
  std::free(frees_);
  std::free(index_);
}

void alloc_log::index_rebuild(std::size_t cap) noexcept {
  auto* n = static_cast<slot*>(std::calloc(cap, sizeof(slot)));
  if (!n) return;
  std::free(index_);
  index_ = n;
  index_cap_ = cap;
  index_used_ = 0;
  for (std::size_t i = 0; i < indexed_; ++i)
    if (allocs_[i]) index_insert(allocs_[i], i);
}

// Empties the index (all of allocs_ unindexed). A big one is given back rather than wiped at the
// end of every later attempt that uses this log (segment records are reused).
void alloc_log::index_clear() noexcept {
  if (index_cap_ > (std::size_t{1} << 16)) {
    std::free(index_);
    index_ = nullptr;
    index_cap_ = 0;
  } else if (index_used_) {
    std::memset(static_cast<void*>(index_), 0, index_cap_ * sizeof(slot));
  }
  index_used_ = 0;
  indexed_ = 0;
}

bool alloc_log::index_insert(void* p, std::size_t pos) noexcept {
  if ((index_used_ + 1) * 2 > index_cap_) {
    index_rebuild(index_cap_ ? index_cap_ * 2 : 64);
    if ((index_used_ + 1) * 2 > index_cap_) return false;  // out of memory: the tail stays unindexed
  }
  std::size_t i = slot_of(p, index_cap_);
  while (index_[i].key > 1) i = (i + 1) & (index_cap_ - 1);
  if (index_[i].key == 0) ++index_used_;
  index_[i] = {reinterpret_cast<std::uintptr_t>(p), pos};
  return true;
}

void alloc_log::index_catch_up() noexcept {
  for (; indexed_ < alloc_count_; ++indexed_)
    if (allocs_[indexed_] && !index_insert(allocs_[indexed_], indexed_)) return;
}

// The slot holding p, or index_cap_ when p is not in the index.
std::size_t alloc_log::index_find(const void* p) const noexcept {
  if (!index_cap_) return 0;
  for (std::size_t i = slot_of(p, index_cap_);; i = (i + 1) & (index_cap_ - 1)) {
    if (index_[i].key == 0) return index_cap_;
    if (index_[i].key == reinterpret_cast<std::uintptr_t>(p)) return i;
  }
}

void alloc_log::index_erase(void* p) noexcept {
  if (const std::size_t i = index_find(p); i != index_cap_) index_[i].key = 1;  // tombstone
}

std::size_t alloc_log::find_alloc(const void* p) noexcept {
  if (alloc_count_ - indexed_ > unindexed_scan) index_catch_up();
  for (std::size_t i = alloc_count_; i-- > indexed_;)  // the unindexed tail: the most recent ones
    if (allocs_[i] == p) return i;
  const std::size_t s = index_find(p);
  return s == index_cap_ ? alloc_count_ : index_[s].pos;
}

void alloc_log::record_alloc(void* p) noexcept {
  if (!grow(allocs_, alloc_cap_, alloc_count_ + 1)) return;  // cannot track: it will simply survive an abort
  allocs_[alloc_count_++] = p;
}

bool alloc_log::forget_alloc(void* p) noexcept {
  const std::size_t i = find_alloc(p);
  if (i == alloc_count_) return false;
  // An enclosing scope's: deferred (the scope may roll back), unless code outside the attempt
  // deletes it (releasing): that delete is not undone by any rollback.
  if (i < floor_ && !releasing_) return false;
  allocs_[i] = nullptr;
  if (i < indexed_) index_erase(p);
  return true;
}

void alloc_log::defer_free(void* p) noexcept {
  if (!grow(frees_, free_cap_, free_count_ + 1)) {
    std::free(p);  // cannot defer: freeing now is the lesser evil than leaking on every attempt
    return;
  }
  frees_[free_count_++] = p;
}

alloc_log::ranges::~ranges() { std::free(items_); }

bool alloc_log::ranges::contains(const void* p) const noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::size_t lo = 0, hi = count_;  // first range with begin > a
  while (lo < hi) {
    const std::size_t mid = (lo + hi) / 2;
    if (items_[mid].begin <= a)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo > 0 && a < items_[lo - 1].end;
}

alloc_log::ranges alloc_log::ranges_after(std::size_t first) const noexcept {
  ranges r;
  if (first >= alloc_count_) return r;
  r.items_ = static_cast<ranges::range*>(std::malloc((alloc_count_ - first) * sizeof(ranges::range)));
  if (!r.items_) return r;  // out of memory: report nothing as freed (a leak, never a use after free)
  for (std::size_t i = first; i < alloc_count_; ++i) {
    if (!allocs_[i]) continue;  // freed already within the attempt
    const auto b = reinterpret_cast<std::uintptr_t>(allocs_[i]);
    r.items_[r.count_++] = {b, b + ::malloc_usable_size(allocs_[i])};
  }
  std::sort(r.items_, r.items_ + r.count_, [](const ranges::range& x, const ranges::range& y) { return x.begin < y.begin; });
  return r;
}

std::size_t alloc_log::rollback_to(mark m) noexcept {
  std::size_t freed = 0;
  for (std::size_t i = alloc_count_; i-- > m.allocs;) {
    if (allocs_[i]) {
      if (i < indexed_) index_erase(allocs_[i]);
      std::free(allocs_[i]);
      ++freed;
    }
  }
  alloc_count_ = m.allocs;
  free_count_ = m.frees;
  if (indexed_ > alloc_count_) indexed_ = alloc_count_;
  if (floor_ > alloc_count_) floor_ = alloc_count_;
  if (alloc_count_ == 0) index_clear();  // and its tombstones
  return freed;
}

std::size_t alloc_log::rollback_between(mark m, mark end) noexcept {
  std::size_t freed = 0;
  for (std::size_t i = m.allocs; i < end.allocs; ++i) {
    if (allocs_[i]) {
      std::free(allocs_[i]);
      ++freed;
    }
  }
  if (alloc_count_ > end.allocs)
    std::memmove(allocs_ + m.allocs, allocs_ + end.allocs, (alloc_count_ - end.allocs) * sizeof(void*));
  alloc_count_ -= end.allocs - m.allocs;
  index_clear();  // the positions after `end` moved: indexed again when a delete needs it
  drop_frees_between(m, end);
  if (floor_ > alloc_count_) floor_ = alloc_count_;
  return freed;
}

void alloc_log::drop_frees_between(mark m, mark end) noexcept {
  if (free_count_ > end.frees)
    std::memmove(frees_ + m.frees, frees_ + end.frees, (free_count_ - end.frees) * sizeof(void*));
  free_count_ -= end.frees - m.frees;
}

std::size_t alloc_log::commit() noexcept {
  stop_holds_ = 0;
  const std::size_t deferred = free_count_;
  // The committing transaction is still installed: no collection (deleters) from here.
  for (std::size_t i = 0; i < free_count_; ++i) epoch_retire(frees_[i], &free_now, false);
  free_count_ = 0;
  alloc_count_ = 0;
  floor_ = 0;
  index_clear();
  return deferred;
}

void alloc_log::keep_allocations() noexcept {
  // The attempt's allocations stay alive, except those it deleted (inside an or_else scope).
  for (std::size_t i = 0; i < free_count_; ++i)
    if (find_alloc(frees_[i]) != alloc_count_) std::free(frees_[i]);
  free_count_ = 0;
  alloc_count_ = 0;
  floor_ = 0;
  index_clear();
}

namespace {
// The quarantine (alloc_quarantine_start): an open-addressing table from block to tag (linear
// probing, deletion by backward shift) and the blocks in arrival order (a ring) for eviction. All in
// malloc'd memory: it is used inside operator new and delete, where an allocation of its own would go
// into the attempt's log.
class quarantine {
 public:
  std::size_t max_bytes = 0;

  void add(void* p, std::uint64_t tag) noexcept {
    if (!make_room()) {
      std::free(p);  // out of memory for the bookkeeping: unchecked, as before the check existed
      return;
    }
    std::size_t i = slot_of(p, cap_);
    while (slots_[i].block) i = (i + 1) & (cap_ - 1);
    slots_[i] = {p, tag};
    ++used_;
    ring_[(ring_first_ + ring_count_++) & (ring_cap_ - 1)] = p;
    bytes_ += ::malloc_usable_size(p);
    while (bytes_ > max_bytes && ring_count_ > 1) evict_oldest();
  }
  // The tag of p if it is held (then it stays held: memory is never reused), else nothing.
  bool find(const void* p, std::uint64_t& tag) const noexcept {
    if (!used_) return false;
    for (std::size_t i = slot_of(p, cap_); slots_[i].block; i = (i + 1) & (cap_ - 1))
      if (slots_[i].block == p) {
        tag = slots_[i].tag;
        return true;
      }
    return false;
  }

 private:
  struct slot {
    void* block;
    std::uint64_t tag;
  };
  slot* slots_ = nullptr;
  std::size_t cap_ = 0, used_ = 0;  // cap_: a power of two, at most half used
  void** ring_ = nullptr;
  std::size_t ring_cap_ = 0, ring_first_ = 0, ring_count_ = 0;  // ring_cap_: a power of two
  std::size_t bytes_ = 0;

  bool make_room() noexcept {
    if (2 * (used_ + 1) > cap_) {
      const std::size_t c = cap_ ? 2 * cap_ : 1024;
      auto* n = static_cast<slot*>(std::calloc(c, sizeof(slot)));
      if (!n) return false;
      for (std::size_t i = 0; i < cap_; ++i)
        if (void* b = slots_[i].block) {
          std::size_t j = slot_of(b, c);
          while (n[j].block) j = (j + 1) & (c - 1);
          n[j] = slots_[i];
        }
      std::free(slots_);
      slots_ = n;
      cap_ = c;
    }
    if (ring_count_ == ring_cap_) {
      const std::size_t c = ring_cap_ ? 2 * ring_cap_ : 1024;
      auto* n = static_cast<void**>(std::malloc(c * sizeof(void*)));
      if (!n) return false;
      for (std::size_t i = 0; i < ring_count_; ++i) n[i] = ring_[(ring_first_ + i) & (ring_cap_ - 1)];
      std::free(ring_);
      ring_ = n;
      ring_cap_ = c;
      ring_first_ = 0;
    }
    return true;
  }
  void evict_oldest() noexcept {
    void* p = ring_[ring_first_];
    ring_first_ = (ring_first_ + 1) & (ring_cap_ - 1);
    --ring_count_;
    std::size_t i = slot_of(p, cap_);
    while (slots_[i].block != p) i = (i + 1) & (cap_ - 1);
    // Backward shift: later entries of the probe run move into the hole if their home allows.
    for (std::size_t j = (i + 1) & (cap_ - 1); slots_[j].block; j = (j + 1) & (cap_ - 1)) {
      const std::size_t home = slot_of(slots_[j].block, cap_);
      if (((j - home) & (cap_ - 1)) >= ((j - i) & (cap_ - 1))) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i] = {nullptr, 0};
    --used_;
    bytes_ -= ::malloc_usable_size(p);
    std::free(p);
  }
};

std::mutex quarantine_lock;
quarantine* quarantined = nullptr;  // set once, under the lock (never destroyed: deletes at exit look)
std::atomic<bool> quarantine_on{false};
void (*quarantine_hit)(void*, std::uint64_t) noexcept = nullptr;

// A delete of a quarantined block: reported (the handler does not return), never freed.
[[gnu::noinline]] bool stale_delete(void* p) noexcept {
  std::uint64_t tag = 0;
  {
    std::lock_guard lk(quarantine_lock);
    if (!quarantined->find(p, tag)) return false;
  }
  quarantine_hit(p, tag);
  return true;
}

// Before anything is allocated or freed: the attempt may leave from here and be rolled back.
inline void stop_if_requested(alloc_log* log) noexcept {
  if (log->stop_requested()) [[unlikely]]
    if (auto hook = alloc_log_stop_hook.load(std::memory_order_relaxed)) hook();
}
inline void* allocate(std::size_t n) {
  if (alloc_log* log = active_log) [[unlikely]]
    stop_if_requested(log);
  void* p = std::malloc(n ? n : 1);
  if (!p) [[unlikely]]
    throw std::bad_alloc();
  if (n >= epoch_large_block) [[unlikely]]
    epoch_large_allocated += n;  // see epoch_collect_if_due
  if (alloc_log* log = active_log) [[unlikely]] {
    epoch_tx_allocated += n;  // see epoch_held_back
    if (!log->releasing()) log->record_alloc(p);
  }
  return p;
}
inline void* allocate_aligned(std::size_t n, std::size_t align) {
  if (alloc_log* log = active_log) [[unlikely]]
    stop_if_requested(log);
  void* p = std::aligned_alloc(align, (n + align - 1) / align * align);
  if (!p) [[unlikely]]
    throw std::bad_alloc();
  if (n >= epoch_large_block) [[unlikely]]
    epoch_large_allocated += n;
  if (alloc_log* log = active_log) [[unlikely]] {
    epoch_tx_allocated += n;  // see epoch_held_back
    if (!log->releasing()) log->record_alloc(p);
  }
  return p;
}
inline void deallocate(void* p) noexcept {
  if (!p) return;
  if (quarantine_on.load(std::memory_order_relaxed)) [[unlikely]]
    if (stale_delete(p)) return;
  if (alloc_log* log = active_log) [[unlikely]] {
    stop_if_requested(log);
    if (log->forget_alloc(p)) {
      std::free(p);
      return;
    }
    if (!log->releasing()) {
      log->defer_free(p);
      return;
    }
  }
  if (defer_plain_frees.load(std::memory_order_acquire) && !epoch_reclaiming) [[unlikely]] {
    // acquire: pairs with the registry's release store; see alloc_log.hpp (privatization).
    epoch_retire(p, &free_now);
    return;
  }
  std::free(p);
}
}  // namespace

std::size_t alloc_log::abort_to_quarantine(std::uint64_t tag) noexcept {
  stop_holds_ = 0;
  std::size_t kept = 0;
  {
    std::lock_guard lk(quarantine_lock);
    for (std::size_t i = 0; i < alloc_count_; ++i)
      if (allocs_[i]) {
        if (quarantined)
          quarantined->add(allocs_[i], tag);
        else
          std::free(allocs_[i]);
        ++kept;
      }
  }
  alloc_count_ = free_count_ = 0;
  indexed_ = floor_ = 0;
  index_clear();
  return kept;
}

void alloc_quarantine_start(void (*on_stale_delete)(void*, std::uint64_t) noexcept, std::size_t max_bytes) noexcept {
  std::lock_guard lk(quarantine_lock);
  if (!quarantined)
    if (void* m = std::malloc(sizeof(quarantine))) quarantined = new (m) quarantine();
  if (!quarantined) return;  // (a checking mode: without memory for it, no check)
  quarantine_hit = on_stale_delete;
  quarantined->max_bytes = max_bytes;
  quarantine_on.store(true, std::memory_order_release);
}

// Referenced by stm/ so that this object file (and so the replacement operators) is always linked
// from the static library.
void link_tx_alloc() noexcept {}

}  // namespace weft::detail

using weft::detail::allocate;
using weft::detail::allocate_aligned;
using weft::detail::deallocate;

void* operator new(std::size_t n) { return allocate(n); }
void* operator new[](std::size_t n) { return allocate(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return allocate(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return allocate(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(std::size_t n, std::align_val_t a) { return allocate_aligned(n, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return allocate_aligned(n, static_cast<std::size_t>(a)); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return allocate_aligned(n, static_cast<std::size_t>(a));
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return allocate_aligned(n, static_cast<std::size_t>(a));
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { deallocate(p); }
void operator delete[](void* p) noexcept { deallocate(p); }
void operator delete(void* p, std::size_t) noexcept { deallocate(p); }
void operator delete[](void* p, std::size_t) noexcept { deallocate(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete(void* p, std::align_val_t) noexcept { deallocate(p); }
void operator delete[](void* p, std::align_val_t) noexcept { deallocate(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { deallocate(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { deallocate(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { deallocate(p); }
