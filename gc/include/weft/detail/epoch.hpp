// weft/detail/epoch.hpp — epoch-based reclamation (private to weft).
//
// Memory that a concurrent reader may still hold (an old boxed tvar version, an object deleted by a
// committed transaction) is *retired*, not freed: it is freed once every thread that was inside a
// critical section when it was retired has left it. Readers bracket their accesses with
// `epoch_guard` (a transaction does, for its whole attempt).
//
// Protocol: a global epoch E; each participating thread publishes, in its own cache line, either
// "quiescent" or the epoch it entered at. E advances from e to e+1 when every active participant
// entered at e. Memory retired while the retiring thread saw epoch e is freed once E >= e + 2: by
// then everyone active at retirement has left. Entering is a plain store: the reclaimer pays instead,
// with a process-wide membarrier() that makes every thread's earlier stores visible before it scans
// (the asymmetric-fence technique); where membarrier is unavailable (or under TSan, which cannot
// see it) entering uses a sequentially consistent store. In fenced mode (epoch_fenced_begin: while an
// ordered run is on) the costs are swapped: entering fences and collecting is a scan and a CAS.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace weft::detail {

inline constexpr std::uint64_t epoch_quiescent = ~std::uint64_t{0};

/// The part of a thread's participant record that entering and leaving touch (the rest is private).
struct alignas(64) epoch_slot {
  std::atomic<std::uint64_t> entered{epoch_quiescent};  ///< the epoch it entered at, or quiescent
  unsigned depth = 0;                                   ///< nesting; only the owning thread touches it
};

extern std::atomic<std::uint64_t> epoch_global;
extern const bool epoch_cheap_enter;  ///< reclaimers use membarrier(): entering needs no fence

/// The calling thread's participant record, or nullptr before its first use and after it was
/// released at thread exit (gc/src/epoch.cpp).
__attribute__((tls_model("initial-exec"))) extern constinit thread_local epoch_slot* epoch_self_slot;
epoch_slot& epoch_self_slow();
/// Sets glibc's mmap and trim thresholds once per process, where glibc's own adjustment stops (32 MiB
/// and 64 MiB), so that memory freed late or in batches (the GC's, a tasklet's) stays mapped for
/// reuse instead of being trimmed and faulted in again; not if GLIBC_TUNABLES sets a malloc tunable.
/// Called at the first use of the GC and when a runtime is made. Thread-safe.
void keep_freed_heap_mapped() noexcept;
/// Gives the calling thread's record back before the thread exits, for a thread that will not use
/// the GC for a long while (an ordered run's worker thread once the run fell back to serial): what it
/// retired and could not free yet goes to the orphans (freed by the next collections of any thread),
/// and it no longer counts as a participant, so that a thread left alone collects as a serial
/// program does (a fence, no membarrier(), every few retires). A later use takes a record again.
/// No-op inside a critical section or without a record.
void epoch_release_self() noexcept;
/// The calling thread's participant record (made on first use, released when the thread exits —
/// after its thread_local destructors, which may still use it — and then recycled).
inline epoch_slot& epoch_self() {
  if (epoch_self_slot) [[likely]]
    return *epoch_self_slot;
  return epoch_self_slow();
}

/// A participant record owned by no thread (a tasklet segment's: it enters when the segment starts
/// and leaves when it commits or aborts, on whatever threads those happen). Never retires into it.
epoch_slot& epoch_slot_acquire();
void epoch_slot_release(epoch_slot& slot) noexcept;

// A Dekker handshake with one cheap side: the frequent side stores, calls asymmetric_fence_light(),
// then loads; the rare side stores, calls asymmetric_fence_heavy(), then loads. One of the two then
// sees the other's store. With membarrier(PRIVATE_EXPEDITED) the light side is only a compiler
// barrier (the heavy side interrupts every running thread of the process); without it (or under
// TSan) both sides are seq_cst fences.
inline void asymmetric_fence_light() noexcept {
  if (epoch_cheap_enter)
    std::atomic_signal_fence(std::memory_order_seq_cst);
  else
    std::atomic_thread_fence(std::memory_order_seq_cst);
}
void asymmetric_fence_heavy() noexcept;

/// One step of a busy wait: the x86 `pause` hint (nothing elsewhere).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/// Asks for the cache line of `p` in a state we may write (x86 `prefetchw`, which processors without
/// it execute as a no-op), so that several misses overlap before the stores or CASes that need them.
inline void prefetch_for_write(const void* p) noexcept {
#if defined(__x86_64__)
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

/// Fenced mode: while it is on, entering costs a full fence and reclaimers need no membarrier(),
/// so that collecting is cheap enough to run after every few retires (epoch_fenced_begin).
extern std::atomic<unsigned> epoch_fenced_users;

inline void epoch_enter(epoch_slot& p) noexcept {
  if (p.depth++ != 0) return;
  // seq_cst (a plain load on x86): ordered with retire's load and the advancing CAS, which the retry
  // waiter of stm/ relies on (transaction.cpp, wait_for_change).
  const std::uint64_t e = epoch_global.load(std::memory_order_seq_cst);
  p.entered.store(e, std::memory_order_relaxed);
  // acquire: pairs with epoch_fenced_end's decrement (see epoch.cpp, try_advance)
  if (epoch_fenced_users.load(std::memory_order_acquire) != 0) [[unlikely]]
    std::atomic_thread_fence(std::memory_order_seq_cst);
  else
    asymmetric_fence_light();  // the reclaimer's heavy fence orders the rest
}

inline void epoch_exit(epoch_slot& p) noexcept {
  if (--p.depth != 0) return;
  // release: our reads of shared memory happen before a reclaimer sees us quiescent.
  p.entered.store(epoch_quiescent, std::memory_order_release);
}
/// Frees `p` with `deleter(p)` once no reader can hold it. Callable inside or outside a critical section.
/// With `may_collect` false it never runs deleters itself (a transaction still installed on the thread
/// calls it so: a deleter may destroy tvars, which must not be logged in that transaction); the caller
/// then calls epoch_collect_if_due() once it is out of the transaction.
void epoch_retire(void* p, void (*deleter)(void*), bool may_collect = true) noexcept;
/// True while this thread runs the deleters of a collection. What a deleter frees was reachable only
/// through the retired object, which no reader has held for a whole grace period: it needs no grace
/// period of its own, and plain frees and tvar destructions skip the privatization deferral
/// (alloc_log.hpp, defer_plain_frees) and go straight back to malloc.
__attribute__((tls_model("initial-exec"))) extern constinit thread_local bool epoch_reclaiming;
/// Fenced mode on (counted: each begin needs its end). From epoch_fenced_begin's return until the
/// matching end, every thread enters with a full fence (~20 ns) and a collection costs no
/// membarrier() (~40 us on a VM, and an interrupt of every other running thread of the process), so
/// that ordered mode can collect at every segment that retired something and keep the memory of
/// old tvar values as small as one worker does. Begin issues one membarrier() itself. Thread-safe.
void epoch_fenced_begin() noexcept;
void epoch_fenced_end() noexcept;
/// True while fenced mode is on: a collection is cheap.
bool epoch_collect_is_cheap() noexcept;
/// In fenced mode, how many retires a thread makes between two collections: a collection scans every
/// participant (a cache line each: threads, and ordered mode's segment records, ~5 per worker), so
/// one per 1/8 of them keeps the scan at ~8 lines per retire whatever the thread count. 1 up to 15
/// participants (two workers: a collection before each segment that retired something).
unsigned epoch_fenced_batch() noexcept;
/// How many retires a thread makes between two collections by default while other threads take part.
constexpr unsigned epoch_collect_every = 64;
/// ... and while it is the only one (a collection then needs no membarrier()).
constexpr unsigned epoch_collect_alone_every = 4;
/// Bytes of large blocks (epoch_large_block or more) the calling thread has allocated since its last
/// collection, counted by weft's operator new. Counts of retires say nothing of what the retired
/// versions hold: two threads replacing a 4 MiB tvar value kept ~300 versions (1 GB) alive between
/// collections every 64 retires. Once a thread has allocated epoch_large_budget in large blocks, a
/// collection is due at its next retire whatever the count: a membarrier() (~40 us) is cheap beside
/// filling that much memory.
__attribute__((tls_model("initial-exec"))) extern constinit thread_local std::size_t epoch_large_allocated;
constexpr std::size_t epoch_large_block = 64 * 1024;
constexpr std::size_t epoch_large_budget = 4 * 1024 * 1024;
/// Bytes the calling thread has allocated inside transactions (ordered mode's segments included),
/// counted by weft's operator new; epoch_held_back() looks at them.
__attribute__((tls_model("initial-exec"))) extern constinit thread_local std::size_t epoch_tx_allocated;
constexpr std::size_t epoch_held_budget = 16 * 1024 * 1024;
/// True once the calling thread has allocated epoch_held_budget bytes inside transactions while the
/// global epoch stayed where it was (it starts counting again whenever the epoch has moved since
/// its last call): a participant that entered long ago is holding back the reclamation of
/// everything retired since, and what the transactions replace piles up. Ordered mode's finished
/// segments, waiting for their turn behind a long chain at the head, are such participants, and
/// are rolled back to let the epoch go on (scheduler/src/ordered.cpp, release_held_epoch).
bool epoch_held_back() noexcept;
/// The epoch a participant record entered at, or epoch_quiescent.
inline std::uint64_t epoch_entered(const epoch_slot& s) noexcept { return s.entered.load(std::memory_order_acquire); }
/// Collects if this thread retired at least `retired_since` objects since its last collection, or
/// retired any and allocated epoch_large_budget in large blocks. A collection costs a membarrier()
/// (tens of us on a VM) and the deleters: a thread with idle moments collects there at the default
/// and elsewhere only past a larger backlog (ordered mode). 0, the default: every
/// epoch_collect_every retires, or every epoch_collect_alone_every while the thread is the only one
/// taking part.
void epoch_collect_if_due(unsigned retired_since = 0) noexcept;
/// Tries to advance the epoch and frees what is safe to free (called by retire every so often).
void epoch_collect() noexcept;
/// For tests: objects retired and not yet freed, in the whole process.
std::size_t epoch_pending() noexcept;
/// For tests: retired entries the collections of the calling thread have looked at so far (its own
/// list and the orphans'). While a reader holds the epoch, collections find nothing new and skip
/// the scan: this stays linear in the retires, not quadratic.
std::uint64_t epoch_scanned() noexcept;
/// For tests: participant records in use (threads that took part and are still running, segment
/// records held).
unsigned epoch_participants_in_use() noexcept;
/// Called (when set) after a collection freed something, with the count; stm/ routes it to the
/// observer hook as event_kind::gc (gc/ sits below the module that owns the hook).
extern std::atomic<void (*)(std::size_t freed)> epoch_freed_hook;

/// RAII critical section; nests.
class epoch_guard {
 public:
  epoch_guard() : p_(epoch_self()) { epoch_enter(p_); }
  ~epoch_guard() { epoch_exit(p_); }
  epoch_guard(const epoch_guard&) = delete;
  epoch_guard& operator=(const epoch_guard&) = delete;

 private:
  epoch_slot& p_;
};

}  // namespace weft::detail
