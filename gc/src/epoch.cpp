// Epoch-based reclamation; see weft/detail/epoch.hpp for the protocol.
//
// Participants live in an append-only, never-freed linked list (readers of the list never lock);
// a thread that exits marks its record free for reuse and hands its unreclaimed memory to the
// orphan list. Each participant's limbo lists are touched only by its own thread, except the orphan
// list, which is protected by orphans_lock.
#include "weft/detail/diagnostics.hpp"
#include "weft/detail/epoch.hpp"
#include "weft/detail/thread_exit.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include <malloc.h>

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace weft::detail {

namespace {

constexpr std::uint64_t quiescent = epoch_quiescent;

struct retired {
  void* p;
  void (*deleter)(void*);
  std::uint64_t epoch;
};

// A vector that allocates with malloc, so that reclamation never goes through (transactional)
// operator new.
struct retired_list {
  retired* items = nullptr;
  std::size_t size = 0, capacity = 0;
  bool push(retired r) noexcept {
    if (size == capacity) {
      std::size_t c = capacity ? capacity * 2 : 64;
      auto* n = static_cast<retired*>(std::realloc(items, c * sizeof(retired)));
      if (!n) return false;  // out of memory: the caller leaks rather than frees early
      items = n;
      capacity = c;
    }
    items[size++] = r;
    return true;
  }
  // Moves the entries retired at or before `safe` to `out` (which must be empty), keeps the rest in
  // order. Deleters run only after, on `out`: a deleter may retire more (a box's destructor deletes
  // memory outside a transaction) and even collect again, so the list must be whole while they run.
  void take_upto(std::uint64_t safe, retired_list& out) noexcept {
    std::size_t kept = 0;
    for (std::size_t i = 0; i < size; ++i) {
      if (items[i].epoch > safe) {
        items[kept++] = items[i];
      } else if (!out.push(items[i])) {
        items[kept++] = items[i];  // out of memory: freed at a later collection
      }
    }
    size = kept;
  }
  // Runs every deleter and empties the list.
  std::size_t run_all() noexcept {
    for (std::size_t i = 0; i < size; ++i) items[i].deleter(items[i].p);
    const std::size_t n = size;
    std::free(items);
    items = nullptr;
    size = capacity = 0;
    return n;
  }
};

}  // namespace

struct epoch_participant : epoch_slot {
  std::atomic<bool> in_use{true};
  unsigned since_collect = 0;
  // The global epoch at this thread's last scan of its limbo list, and how many times in a row a
  // collection found it unchanged (see epoch_collect).
  std::uint64_t scanned_at = 0;
  std::uint64_t orphans_seen = 0;
  bool orphans_skipped = false;  // the last scan found the orphan list locked and did not look at it
  unsigned stuck = 0;
  retired_list limbo;
  epoch_participant* next = nullptr;  // list of all participants (append-only)
};

std::atomic<std::uint64_t> epoch_global{1};
__attribute__((tls_model("initial-exec"))) constinit thread_local epoch_slot* epoch_self_slot = nullptr;
__attribute__((tls_model("initial-exec"))) constinit thread_local bool epoch_reclaiming = false;
__attribute__((tls_model("initial-exec"))) constinit thread_local std::size_t epoch_large_allocated = 0;
__attribute__((tls_model("initial-exec"))) constinit thread_local std::size_t epoch_tx_allocated = 0;
namespace {
__attribute__((tls_model("initial-exec"))) constinit thread_local std::uint64_t scanned_here = 0;  // epoch_scanned
__attribute__((tls_model("initial-exec"))) constinit thread_local std::uint64_t held_epoch_seen = 0;  // epoch_held_back
}  // namespace

namespace {
std::atomic<epoch_participant*> participants{nullptr};
std::atomic<unsigned> participants_made{0};  // the length of that list (records are reused, never unlinked)
std::atomic<unsigned> participants_in_use{0};  // records owned by a thread or a segment (a hint: see collect_every)
std::atomic<std::size_t> pending_count{0};

std::mutex orphans_lock;  // protects orphans; deleters (plain frees) may run under it
retired_list orphans;
std::atomic<std::uint64_t> orphans_added{0};  // hand-offs to `orphans` so far

bool use_membarrier() {
#if defined(__SANITIZE_THREAD__)
  return false;  // TSan cannot see the barrier's ordering
#else
  static const bool ok = ::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  return ok;
#endif
}
}  // namespace

const bool epoch_cheap_enter = use_membarrier();

void asymmetric_fence_heavy() noexcept {
  if (epoch_cheap_enter)
    ::syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
  else
    std::atomic_thread_fence(std::memory_order_seq_cst);
}

namespace {

// Runs when the thread exits (after its thread_local destructors, which may still use the GC).
void release_participant(void* value) noexcept {
  auto* p = static_cast<epoch_participant*>(value);
  // Hand what this thread could not free yet to the orphan list.
  if (p->limbo.size) {
    std::lock_guard lock(orphans_lock);
    for (std::size_t i = 0; i < p->limbo.size; ++i) orphans.push(p->limbo.items[i]);
    p->limbo.size = 0;
    orphans_added.fetch_add(1, std::memory_order_relaxed);
  }
  p->entered.store(quiescent, std::memory_order_release);
  epoch_self_slot = nullptr;
  p->in_use.store(false, std::memory_order_release);  // pairs with the acquire exchange in epoch_self
  participants_in_use.fetch_sub(1, std::memory_order_relaxed);
}

thread_exit_slot& participant_slot() {
  static thread_exit_slot slot(&release_participant);
  return slot;
}

// Fenced mode (epoch.hpp). `fenced_ready` counts the begins whose membarrier has completed (from
// then on no enter of a thread that saw `epoch_fenced_users` at 0 is still unordered) minus the ends;
// `fenced_ends` counts the ends. A reclaimer that finds `fenced_ready` > 0 before its scan and no end
// since after it scanned while every enter was fenced: a plain seq_cst fence orders its scan. If an
// end came in between, an enter may have been light again: it does not advance (the next collection
// will, with membarrier).
std::atomic<unsigned> fenced_ready{0};
std::atomic<std::uint64_t> fenced_ends{0};

// Whether the calling thread's record is the only one in use. Called after a seq_cst fence: a thread
// that takes a record (take_participant) fences after marking it, before it enters; so either our
// fence comes first in the single total order and that thread, once in, reads every store we made
// before it (the replaced pointer, not the retired one), or its mark is visible to this scan.
bool alone_after_fence() noexcept {
  const epoch_slot* self = epoch_self_slot;
  for (epoch_participant* p = participants.load(std::memory_order_seq_cst); p; p = p->next)
    if (p != self && p->in_use.load(std::memory_order_seq_cst)) return false;
  return true;
}

bool try_advance() noexcept {
  std::uint64_t e = epoch_global.load(std::memory_order_acquire);
  const std::uint64_t ends = fenced_ends.load(std::memory_order_seq_cst);
  const bool fenced = fenced_ready.load(std::memory_order_seq_cst) != 0;
  // The heavy fence orders the stores of threads that entered light (membarrier(), ~40 us on a VM and
  // an interrupt of every running thread); a thread alone in the GC - a serial program - has nobody
  // to order, and a seq_cst fence is all it needs (alone_after_fence).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!fenced && !alone_after_fence()) asymmetric_fence_heavy();
  for (epoch_participant* p = participants.load(std::memory_order_acquire); p; p = p->next) {
    std::uint64_t x = p->entered.load(std::memory_order_acquire);
    if (x != quiescent && x != e) return false;
  }
  if (fenced && fenced_ends.load(std::memory_order_seq_cst) != ends) return false;
  return epoch_global.compare_exchange_strong(e, e + 1, std::memory_order_seq_cst);
}

}  // namespace

namespace {
// The calling thread's record from now on, released when it exits.
epoch_slot& adopt(epoch_participant* p) noexcept {
  epoch_self_slot = p;
  participant_slot().arm(p);
  return *p;
}
}  // namespace

namespace {
// A free record (reused, or new and linked in), marked in use.
epoch_participant* take_participant() noexcept {
  for (epoch_participant* p = participants.load(std::memory_order_acquire); p; p = p->next) {
    bool free = false;
    if (!p->in_use.load(std::memory_order_relaxed) &&
        p->in_use.compare_exchange_strong(free, true, std::memory_order_seq_cst)) {
      participants_in_use.fetch_add(1, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_seq_cst);  // before any enter: see alone_after_fence
      return p;
    }
  }
  void* mem = std::aligned_alloc(alignof(epoch_participant), sizeof(epoch_participant));
  if (!mem) abort_unwrapped();  // cannot take part in reclamation: nothing sane to do
  auto* p = new (mem) epoch_participant;
  participants_made.fetch_add(1, std::memory_order_relaxed);
  epoch_participant* head = participants.load(std::memory_order_relaxed);
  do {
    p->next = head;
  } while (!participants.compare_exchange_weak(head, p, std::memory_order_seq_cst, std::memory_order_relaxed));
  participants_in_use.fetch_add(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // before any enter: see alone_after_fence
  return p;
}
}  // namespace

// Memory retired here goes back to malloc a few retires later and in batches, not where the program
// dropped it. With glibc's defaults (trim threshold 128 KiB, raised only when a block above the mmap
// threshold is freed) such a batch leaves a free stretch at the top of a heap that is handed back to
// the system (brk, or madvise in a thread's arena), and the next allocations fault the pages in again:
// 16 faults per 64 KiB vector that a tvar replaces, in serial programs and more with several workers
// (weft_sample_agents at two workers: 1,530 page faults against 787; 0.93-0.95 of the time without them,
// medians of 11 and 21 interleaved pairs). So once, before the first retire (and when a thread's
// runtime is made), the thresholds are set where glibc's own adjustment stops (mmap 32 MiB, trim
// twice that): the state a program reaches once it frees a block of 32 MiB. Both: M_TRIM_THRESHOLD
// alone turns the dynamic mmap threshold off, and every block over 128 KiB would be mapped and
// unmapped each time (a newcomer's 64 KiB-4 MiB buffers: 4-40x slower). Not if GLIBC_TUNABLES sets
// any malloc tunable: the user chose.
void keep_freed_heap_mapped() noexcept {
#if defined(__GLIBC__)
  static const bool done = [] {
    const char* tunables = std::getenv("GLIBC_TUNABLES");
    if (tunables && std::strstr(tunables, "glibc.malloc.")) return false;
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    return true;
  }();
  (void)done;
#endif
}

epoch_slot& epoch_self_slow() {
  keep_freed_heap_mapped();
  return adopt(take_participant());
}

void epoch_release_self() noexcept {
  auto* p = static_cast<epoch_participant*>(epoch_self_slot);
  if (!p || p->depth != 0) return;
  participant_slot().arm(nullptr);
  release_participant(p);
}

epoch_slot& epoch_slot_acquire() { return *take_participant(); }

void epoch_slot_release(epoch_slot& slot) noexcept {
  auto& p = static_cast<epoch_participant&>(slot);
  p.entered.store(quiescent, std::memory_order_release);
  p.depth = 0;
  p.in_use.store(false, std::memory_order_release);
  participants_in_use.fetch_sub(1, std::memory_order_relaxed);
}

std::atomic<unsigned> epoch_fenced_users{0};

void epoch_fenced_begin() noexcept {
  epoch_fenced_users.fetch_add(1, std::memory_order_seq_cst);
  // Every thread that entered light before it saw the count is ordered by this one heavy fence.
  asymmetric_fence_heavy();
  fenced_ready.fetch_add(1, std::memory_order_seq_cst);
}

void epoch_fenced_end() noexcept {
  fenced_ready.fetch_sub(1, std::memory_order_seq_cst);
  fenced_ends.fetch_add(1, std::memory_order_seq_cst);
  epoch_fenced_users.fetch_sub(1, std::memory_order_seq_cst);
}

bool epoch_collect_is_cheap() noexcept { return fenced_ready.load(std::memory_order_relaxed) != 0; }

unsigned epoch_fenced_batch() noexcept { return std::max(1u, participants_made.load(std::memory_order_relaxed) / 8); }

void epoch_retire(void* ptr, void (*deleter)(void*), bool may_collect) noexcept {
  auto& p = static_cast<epoch_participant&>(epoch_self());
  // Out of memory: leaked rather than freed while a reader may hold it.
  if (!p.limbo.push({ptr, deleter, epoch_global.load(std::memory_order_seq_cst)})) return;  // see epoch_enter
  pending_count.fetch_add(1, std::memory_order_relaxed);
  ++p.since_collect;
  if (may_collect) epoch_collect_if_due();
}

void epoch_collect_if_due(unsigned retired_since) noexcept {
  // Not from a deleter of a collection (one that destroys tvars retires their boxes): at every
  // retire, a chain of them would nest a collection per link.
  if (epoch_reclaiming) return;
  auto& p = static_cast<epoch_participant&>(epoch_self());
  // Alone, a collection is a fence, a scan of the list and a CAS (try_advance): it runs every few
  // retires, so that what a serial program replaces goes back to malloc while still in the cache and
  // is handed out again (agents, one worker: each tick's 64 KiB generations came from memory freed
  // one to three ticks before instead of the one just replaced; 0.79 of the time collecting at every
  // retire, 0.81 every 4, which costs a 32-byte string's direct write nothing and its atomically +4 ns
  // against +14 ns at every retire).
  if (retired_since == 0)
    retired_since =
        participants_in_use.load(std::memory_order_relaxed) <= 1 ? epoch_collect_alone_every : epoch_collect_every;
  // While the epoch stays where it was (a reader holds it: a finished segment waiting to commit
  // behind main's long last segment, say), collections grow apart, up to 64 times: each costs a
  // heavy fence and would find nothing new to free.
  retired_since <<= std::min(p.stuck, 6u);
  if (p.since_collect >= retired_since || (p.since_collect != 0 && epoch_large_allocated >= epoch_large_budget)) {
    p.since_collect = 0;
    epoch_collect();
  }
}

void epoch_collect() noexcept {
  auto& p = static_cast<epoch_participant&>(epoch_self());
  epoch_large_allocated = 0;
  try_advance();
  std::uint64_t e = epoch_global.load(std::memory_order_acquire);
  if (e < 2) return;
  // Entries are stamped with the epoch of their retire, so with the epoch where it was at the last
  // scan nothing in the list has become free since: the scan is skipped. Without this a reader that
  // held the epoch made every collection walk all that piled up behind it: main deleting a map of
  // 400,000 strings after a parallel run took 3 s instead of 7.5 ms (newcomer round 13).
  const std::uint64_t orphans_seen = orphans_added.load(std::memory_order_relaxed);
  if (e == p.scanned_at && orphans_seen == p.orphans_seen && !p.orphans_skipped) {
    ++p.stuck;
    return;
  }
  p.stuck = 0;
  p.scanned_at = e;
  p.orphans_seen = orphans_seen;
  retired_list doomed;
  scanned_here += p.limbo.size;
  p.limbo.take_upto(e - 2, doomed);
  {
    std::unique_lock lock(orphans_lock, std::try_to_lock);
    if (lock.owns_lock() && orphans.size) {
      scanned_here += orphans.size;
      orphans.take_upto(e - 2, doomed);
    }
    p.orphans_skipped = !lock.owns_lock();  // not looked at: look next time
  }
  // Outside the lock and with the lists whole: deleters may retire more and collect again. What they
  // free goes straight back to malloc (epoch_reclaiming): a second trip through the GC held every
  // tvar's old value for two collections instead of one (agents at 2 workers: half of its 38,000
  // retires were the vectors of boxes already retired; 46 us of membarrier per collection here).
  const bool outer = epoch_reclaiming;
  epoch_reclaiming = true;
  const std::size_t freed = doomed.run_all();
  epoch_reclaiming = outer;
  pending_count.fetch_sub(freed, std::memory_order_relaxed);
  if (freed)
    if (auto hook = epoch_freed_hook.load(std::memory_order_acquire)) hook(freed);
}

std::size_t epoch_pending() noexcept { return pending_count.load(std::memory_order_relaxed); }

bool epoch_held_back() noexcept {
  const std::uint64_t e = epoch_global.load(std::memory_order_relaxed);
  if (e != held_epoch_seen) {
    held_epoch_seen = e;
    epoch_tx_allocated = 0;
    return false;
  }
  return epoch_tx_allocated >= epoch_held_budget;
}

std::uint64_t epoch_scanned() noexcept { return scanned_here; }

unsigned epoch_participants_in_use() noexcept { return participants_in_use.load(std::memory_order_relaxed); }

std::atomic<void (*)(std::size_t)> epoch_freed_hook{nullptr};

}  // namespace weft::detail
