// weft/detail/stm_core.hpp — the transaction descriptor and the inline read/write barriers (private
// to weft; public only because tvar<T> and atomically are templates).
//
// Lock word (tvar_base::meta), one 64-bit atomic per tvar:
//   unlocked:  version << 2 | reserved      reserved (bit 1): the inevitable transaction uses this tvar;
//                                           others may read it but nobody else may lock it
//   locked:    owner descriptor | 1         held only by a committing transaction (or a direct write)
//                                           during write-back
// The value (tvar_base::bits) is written only while the lock is held and read seqlock-style:
// meta (acquire) -> bits -> acquire fence -> meta again; the writer puts a release fence between
// taking the lock and writing bits, and unlocks with a release store of the new version.
//
// A descriptor belongs to one thread at a time (the one running the transaction); its logs are
// malloc-backed arrays reused from one transaction to the next, so the common path does not allocate.
// In the parallel tasklet modes a finished segment's descriptor will be committed by another worker
// (DESIGN.md §6); nothing here assumes the committing thread is the one that ran it, except
// current_transaction(), which the runtime sets when it switches tasklets.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <source_location>
#include <thread>
#include <utility>
#include <vector>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

#include "weft/detail/alloc_log.hpp"
#include "weft/detail/epoch.hpp"
#include "weft/observe.hpp"

namespace weft::detail {

struct tx_abort_signal {};  ///< thrown out of f by a barrier that found a conflict; caught by atomically
struct tx_retry_signal {};  ///< thrown by retry()

/// Set by the scheduler (scheduler/src/ordered.cpp) for the transactions of tasklet segments, which
/// never unwind (DESIGN.md §4.3). `segment_abort_jump` jumps back to the worker that runs the segment (the
/// tasklet's stack is then restored from its snapshot); `segment_park_for_head` parks the segment until
/// its tasklet is the head of the committed ring and returns with the transaction inevitable.
extern void (*segment_abort_jump)();
extern void (*segment_park_for_head)();
/// Set on this thread while the C++ runtime destroys an exception object (the scheduler's wraps of
/// __cxa_end_catch and of exception_ptr's release): the runtime frees the object's storage with
/// free() as soon as its destructor returns, not through a delete the transaction defers. A tvar
/// destroyed meanwhile (a member of the exception) is handled as a dead local is: its commit must not
/// write to its storage (transaction::tvar_destroyed).
__attribute__((tls_model("initial-exec"))) extern constinit thread_local bool exception_storage_dying;
/// Where a tasklet or channel operation is refused on this thread (perform checks this one word):
/// tvar::view calls running outside any transaction (a serial tasklet, main; view_scope), counted
/// by refused_in_view, destructors of weft::shared objects (shared.hpp), counted by
/// refused_in_shared_destructor, and of a dropped tasklet's function, by refused_in_dropped_tasklet.
/// Inside a transaction the transaction counts views (transaction::in_view), so that the count
/// follows a segment's tasklet and goes with a rolled-back attempt.
__attribute__((tls_model("initial-exec"))) extern constinit thread_local std::uint64_t scheduler_ops_refused;
/// Three counts of 21 bits in one word (deep enough for any nesting of destructors; 16 bits wrapped
/// at 256 nested ones).
inline constexpr std::uint64_t refused_in_view = 1;
inline constexpr std::uint64_t refused_in_shared_destructor = std::uint64_t{1} << 21;
/// Destroying a tasklet's control block (its last handle gone): the captures of a function that never
/// ran are destroyed there (scheduler/src/runtime.cpp, destroy).
inline constexpr std::uint64_t refused_in_dropped_tasklet = std::uint64_t{1} << 42;
/// Refuses tasklet and channel operations on this thread for its scope: `count` is one of the
/// refused_in_* above (the destructors of shared objects and of a dropped tasklet's function).
class scheduler_ops_refused_scope {
 public:
  explicit scheduler_ops_refused_scope(std::uint64_t count) noexcept : count_(count) { scheduler_ops_refused += count_; }
  ~scheduler_ops_refused_scope() { scheduler_ops_refused -= count_; }
  scheduler_ops_refused_scope(const scheduler_ops_refused_scope&) = delete;
  scheduler_ops_refused_scope& operator=(const scheduler_ops_refused_scope&) = delete;

 private:
  std::uint64_t count_;
};
class transaction;
/// Set by the scheduler (ordered.cpp) while any ordered run exists. A commit outside every tasklet
/// segment that writes tvars — of `tx`, or the one tvar `single` of a direct write — calls
/// `outside_write_begin` before it locks them and, if that returned a token, `outside_write_end` with
/// it once they are written and unlocked. The scheduler uses them when main writes a tvar that lives
/// on a tasklet's stack: the write-back then cannot interleave with a rollback of that tasklet, and
/// the snapshots of its segments in flight get the new state (ordered.cpp, "main's writes").
extern std::atomic<void* (*)(const transaction* tx, const void* single)> outside_write_begin;
extern std::atomic<void (*)(void* token)> outside_write_end;
/// Set by the scheduler (threads.cpp): whether a thread other than the caller that may still use weft
/// is alive (one the program started, until it ends). retry() in a thread with nobody else to commit
/// would wait for ever: its own tasklets do not run while it waits.
extern bool (*another_thread_may_commit)() noexcept;
/// Set by the scheduler: whether the calling code runs in a tasklet other than its thread's main one
/// (retry() there is refused in every mode: a tasklet waits on a channel).
extern bool (*running_in_tasklet)() noexcept;

inline constexpr std::uint64_t lock_bit = 1;
inline constexpr std::uint64_t reserved_bit = 2;
inline constexpr std::uint64_t version_of(std::uint64_t meta) noexcept { return meta >> 2; }

static_assert(sizeof(std::source_location) == sizeof(std::uintptr_t), "source_location is one pointer");

// Names and last-writer locations live in side tables (stm/src/side_tables.cpp), not in the tvar:
// they are needed only for conflict records, and 16 bytes per tvar keep big data sets dense.
extern std::atomic<bool> side_tables_used;  ///< set once a tvar is named or an observer installed
void tvar_named(const void* var, const char* name);
void tvar_gone(const void* var) noexcept;
const char* tvar_name(const void* var) noexcept;

/// Solo mode's claim word (see stm/src/transaction.cpp): a solo attempt checks it is unchanged.
extern std::atomic<std::uint64_t> solo_state;

struct tvar_base {
  explicit tvar_base(const char* name) {
    if (name) tvar_named(this, name);
  }
  ~tvar_base() = default;  // tvar<T>'s destructor decides when the tvar is really gone
  void forget() noexcept {
    if (side_tables_used.load(std::memory_order_relaxed)) [[unlikely]]
      tvar_gone(this);
  }
  tvar_base(const tvar_base&) = delete;
  tvar_base& operator=(const tvar_base&) = delete;
  std::atomic<std::uint64_t> meta{0};
  std::atomic<std::uint64_t> bits{0};

  /// A consistent read outside any transaction (waits while a writer holds the lock).
  std::uint64_t read_direct() const noexcept {
    for (;;) {
      std::uint64_t m1 = meta.load(std::memory_order_acquire);
      // acquire: a solo commit publishes a value by this store alone (see transaction.cpp)
      std::uint64_t b = bits.load(std::memory_order_acquire);
      std::atomic_thread_fence(std::memory_order_acquire);  // pairs with the writer's release fence
      if (!(m1 & lock_bit) && meta.load(std::memory_order_relaxed) == m1) [[likely]]
        return b;
      wait_unlocked();
    }
  }
  /// Destruction outside any transaction. While other threads' transactions may still read it (two
  /// or more threads use the STM), it is marked changed and its box goes to the epoch GC.
  void destroy(void (*drop)(void*)) noexcept {
    if (defer_plain_frees.load(std::memory_order_acquire) && !epoch_reclaiming) [[unlikely]] {
      destroy_shared(drop);
      return;
    }
    if (drop) drop(reinterpret_cast<void*>(bits.load(std::memory_order_relaxed)));
    forget();
  }
  void destroy_shared(void (*drop)(void*)) noexcept;
  /// A write outside any transaction: a transaction of one write (lock, new version, unlock).
  void write_direct(std::uint64_t b, void (*drop)(void*), const std::source_location& where);
  void wait_unlocked() const noexcept;
};

struct read_entry {
  const tvar_base* var;
  std::source_location where;
};

struct write_entry {
  tvar_base* var;
  std::uint64_t bits;
  void (*drop)(void*);    ///< boxed tvars: frees a box (nullptr for inline values)
  std::uint64_t old_meta; ///< the unlocked lock word, while we hold the lock at commit
  std::source_location where;
};

/// A malloc-backed array that keeps its capacity (never goes through operator new).
template <class E>
struct log_array {
  E* data = nullptr;
  std::uint32_t size = 0, cap = 0;
  log_array() = default;
  log_array(const log_array&) = delete;
  log_array& operator=(const log_array&) = delete;
  ~log_array() { std::free(data); }
  [[gnu::always_inline]] void push(const E& e) {
    if (size == cap) [[unlikely]]
      grow();
    data[size++] = e;
  }
  /// The next slot, for filling field by field (no temporary, no store-to-load forwarding stall).
  [[gnu::always_inline]] E& emplace() {
    if (size == cap) [[unlikely]]
      grow();
    return data[size++];
  }
  void grow() {
    std::uint32_t c = cap ? cap * 2 : 64;
    auto* n = static_cast<E*>(std::realloc(static_cast<void*>(data), c * sizeof(E)));
    if (!n) throw std::bad_alloc();
    data = n;
    cap = c;
  }
  /// Removes the entries for which pred(entry) holds, keeping the others in order.
  template <class P>
  void remove_if(P pred) noexcept {
    std::uint32_t kept = 0;
    for (std::uint32_t i = 0; i < size; ++i)
      if (!pred(data[i])) data[kept++] = data[i];
    size = kept;
  }
  E* begin() noexcept { return data; }
  E* end() noexcept { return data + size; }
};

struct counters {
  // Written only by the owning thread (load + store, no read-modify-write); read by stats().
  std::atomic<std::uint64_t> commits{0}, read_only_commits{0}, aborts_conflict{0}, aborts_validation{0},
      aborts_locked{0}, aborts_inevitable{0}, aborts_exception{0}, retries{0}, inevitable{0}, extensions{0},
      locks_acquired{0}, solo{0}, sole_run{0}, allocations_undone{0}, frees_deferred{0};
  static void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

/// Loads a word of a tvar for a transaction's read or its validation. In AddressSanitizer builds the
/// load is not instrumented: an attempt whose snapshot is stale may read a tvar that is gone — one on
/// a tasklet's stack, found through a registry before its owner's scope ended, the bytes since
/// reused by the owner's next frames (README: the registered-agent pattern) — which is legitimate
/// speculation: the attempt is doomed, and its validation rolls it back before it commits or writes
/// anything there (read_slow, commit_locked). ASan reported it as a stack-buffer-underflow, so such
/// programs could not be checked under ASan (newcomer round 21, 4 of 6 runs at two workers). Genuine
/// uses of freed tvars outside a transaction (tvar::get on a destroyed object) are still reported.
/// ThreadSanitizer reported the same speculation as a data race between the load and the plain writes
/// of the next tvar constructed in those bytes (tvar_base's constructor; CI, 1 run in 2 at two
/// workers): in TSan builds the load is the same uninstrumented `mov`, and an acquiring order is
/// modelled by __tsan_acquire on the word, which takes the happens-before edges of the release stores
/// and read-modify-writes made to it since (a commit's unlock; possibly a few more than the one the
/// `mov` read, which can only hide a race, never invent one).
/// Elsewhere an ordinary atomic load (on x86-64 every order here is a plain `mov`, as below).
[[gnu::always_inline]] inline std::uint64_t speculative_load(const std::atomic<std::uint64_t>& a,
                                                            std::memory_order order) noexcept {
#if (defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)) && defined(__x86_64__)
  std::uint64_t v;
  asm volatile("movq %1, %0" : "=r"(v) : "m"(*reinterpret_cast<const std::uint64_t*>(&a)) : "memory");
#if defined(__SANITIZE_THREAD__)
  if (order != std::memory_order_relaxed) __tsan_acquire(const_cast<std::atomic<std::uint64_t>*>(&a));
#else
  (void)order;
#endif
  return v;
#else
  return a.load(order);
#endif
}

class alignas(64) transaction {
 public:
  transaction();
  ~transaction();
  transaction(const transaction&) = delete;
  transaction& operator=(const transaction&) = delete;

  [[gnu::always_inline]] std::uint64_t read(const tvar_base& v, const std::source_location& where) {
    if (writes_.size) [[unlikely]] {
      if (const write_entry* w = find_write(&v)) return w->bits;
    }
    if (solo_) {
      // Nobody else commits while we are solo. Revokers mark solo_state before their first commit,
      // and commits put a release fence before their stores: if we loaded a value written since,
      // we see the mark and give up the attempt (opacity).
      const std::uint64_t b = v.bits.load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (solo_state.load(std::memory_order_relaxed) == solo_token_) [[likely]]
        return b;
      return solo_revoked(b);
    }
    if (!inevitable_) [[likely]] {
      // seq_cst (a plain load on x86): ordered after the clock load that produced rv_ (see
      // transaction.cpp on the lazy clock).
      std::uint64_t m1 = speculative_load(v.meta, std::memory_order_seq_cst);
      std::uint64_t b = speculative_load(v.bits, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);  // pairs with the writer's release fence
      std::uint64_t m2 = speculative_load(v.meta, std::memory_order_relaxed);
      if (m1 == m2 && !(m1 & lock_bit) && version_of(m1) <= rv_) [[likely]] {
        if (reads_.size == reads_.cap) [[unlikely]]
          reads_full();
        read_entry& e = reads_.data[reads_.size++];
        e.var = &v;
        e.where = where;
        return b;
      }
    } else if (exclusive_) {
      // Only our run commits (an inevitable segment, an audit of a million tvars): no log, no
      // reservation; a committer from before we took the token may still be writing back.
      std::uint64_t m1 = v.meta.load(std::memory_order_seq_cst);
      std::uint64_t b = v.bits.load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (!(m1 & lock_bit) && v.meta.load(std::memory_order_relaxed) == m1) [[likely]]
        return b;
    }
    return read_slow(v, where);
  }

  [[gnu::always_inline]] void write(tvar_base& v, std::uint64_t b, void (*drop)(void*),
                                    const std::source_location& where) {
    if (writes_.size > linear_limit) {
      // A big log (a segment's: the bank's 200 writes a batch): one hash for the filter, the lookup
      // and the insertion.
      const std::uint64_t h = write_hash(&v);
      if (filter_may_hold(h)) [[unlikely]] {
        if (auto* w = const_cast<write_entry*>(find_write_indexed(&v, h))) {
          replace_write(*w, b, where);
          return;
        }
      }
      append_write(v, b, drop, where);
      if (writes_.size * 2 > index_.size) [[unlikely]]
        index_write(writes_.size - 1);  // grows the index first
      else
        insert_index(writes_.size - 1, h);
      return;
    }
    if (write_entry* w = find_write(&v)) {
      replace_write(*w, b, where);
      return;
    }
    append_write(v, b, drop, where);
    if (writes_.size > linear_limit) [[unlikely]]
      index_write(writes_.size - 1);  // builds the index
  }

  // Driven by atomically().
  void begin();
  bool commit();
  void after_commit();
  void rollback_after_conflict();
  void abort_by_exception() noexcept;
  void wait_for_change();

  // or_else scopes.
  // Scopes: or_else branches and nested atomically blocks. A scope that ends normally or by a
  // conflict/retry signal is closed (its effects join the enclosing scope); one that retries inside
  // or_else, or that an exception leaves, is rolled back.
  struct scope_mark {
    std::uint32_t writes, undo, commit_hooks, abort_hooks, created, destroyed;
    alloc_log::mark allocs;
    std::size_t alloc_floor;      ///< the enclosing scope's, restored when this one ends
    std::uint32_t created_floor;  ///< likewise
  };
  [[gnu::always_inline]] scope_mark open_scope() {
    ++scope_depth_;
    const alloc_log::mark here = allocs_.position();
    return {writes_.size,
            undo_.size,
            static_cast<std::uint32_t>(commit_hooks_.size()),
            static_cast<std::uint32_t>(abort_hooks_.size()),
            created_.size,
            destroyed_.size,
            here,
            allocs_.set_floor(here.allocs),  // deleting older allocations inside the scope is deferred
            std::exchange(created_floor_, created_.size)};  // so is destroying older tvars
  }
  [[gnu::always_inline]] void close_scope(const scope_mark& m) noexcept {
    allocs_.set_floor(m.alloc_floor);
    created_floor_ = m.created_floor;
    // An enclosing scope may still roll back: it keeps the undo entries.
    if (--scope_depth_ == 0 && undo_.size != m.undo) [[unlikely]]
      drop_undo(m);
  }
  /// Undoes the scope: its writes, tvars made and destroyed in it, hooks (its abort hooks run, before
  /// its memory is freed), and its allocations — unless `keep_allocations` (an exception leaves the
  /// scope and may refer to memory allocated there: it stays, owned by the enclosing attempt).
  /// Throws what an abort hook throws (weft's conflict signal among them), the scope undone.
  void rollback_scope(const scope_mark& m, bool keep_allocations = false);

  /// The control-flow signals (conflict, retry). Recorded before they are thrown, so that an attempt
  /// whose signal was caught by user code (`catch (...)` that does not rethrow) cannot commit.
  [[noreturn]] void raise_abort();
  [[noreturn]] void raise_retry();
  /// or_else consumed a retry signal (it runs the other branch).
  // (A swallowed conflict stays recorded.)
  void retry_consumed() noexcept { signal_pending_ = static_cast<std::uint8_t>(signal_pending_ & ~2u); }
  /// Called by atomically before it closes a scope. In a tasklet's segment the outermost scope is
  /// what one worker runs as a transaction of its own, whose commit throws std::logic_error when user
  /// code caught a retry signal and went on (signal_swallowed): thrown here, at the same place, it
  /// rolls the block back as that commit's failure did. (Left pending, the segment could never commit
  /// and was run again and again, then inevitable at the head, where it could not be rolled back:
  /// a crash, or its write lost.)
  void scope_closing() {
    if (signal_pending_ && segment_ && scope_depth_ == 1) [[unlikely]]
      signal_swallowed();
  }

  /// A tvar constructed in this attempt: its box is freed if the attempt aborts.
  void tvar_created(tvar_base* v, void (*drop)(void*));
  /// A tvar destroyed in this attempt: at once if it was made in the attempt too; otherwise only at
  /// commit (its box then goes to the epoch GC), and not at all if the attempt aborts.
  void tvar_destroyed(tvar_base* v, void (*drop)(void*));

  // Tasklet segments (DESIGN.md §4): a transaction begun for a segment on one thread, run there, and
  // committed or rolled back later by whichever thread holds the scheduler's commit lock. It is
  // never solo; its descriptor is registered like a thread's (segment_register) and holds its own
  // epoch slot, so that nothing it read is freed while it waits for its turn.
  /// The stack of the segment's tasklet, [lo, hi): a tvar there that dies in the segment is a local
  /// going out of scope (tvar_destroyed).
  void segment_stack(const void* lo, const void* hi) noexcept { stack_lo_ = lo, stack_hi_ = hi; }
  /// Starts an attempt (not installed on any thread); `inevitable`: takes the token first.
  void segment_begin(epoch_slot& slot, bool inevitable);
  /// Installs (removes) the attempt as the calling thread's transaction and allocation log.
  void segment_attach() noexcept;
  /// Operator new and delete in the segment's attempts stop it (alloc_log_stop_hook) once *stop is not 0.
  void segment_watch_stop(const std::atomic<std::uint8_t>* stop) noexcept { allocs_.watch_stop(stop); }
  /// Whether every tvar the attempt read is still at the version it read (a check the scheduler asks
  /// of a segment that may be doomed: see ordered.cpp, stop_doomed_segment). The running attempt's
  /// own thread only.
  bool segment_reads_valid() const noexcept;
  void segment_detach() noexcept;
  /// The commit proper: locks, validation of every read (read-only attempts too: a predecessor in
  /// commit order may have written what this one read), write-back. False: nothing was published;
  /// call segment_abort().
  bool segment_commit();
  /// After segment_commit(): allocations kept, deferred frees and destroyed tvars handed to the
  /// epoch GC, epoch left. Returns the on_commit hooks, for the caller to run.
  std::vector<std::function<void()>> segment_finish_commit() noexcept;
  /// Drops the attempt: writes, on_abort hooks (destroyed, not run: a rolled-back segment's blocks
  /// ended, from its tasklet's point of view), allocations (freed), tvars made in it, reservations and
  /// token; leaves the epoch. Call it with a scratch handle log installed (segment_handles): the
  /// hooks' handle releases belong to the attempt. With `quarantine`, the allocations go to the
  /// allocation quarantine tagged `tag` instead of being freed (WEFT_CHECK=replay's first runs).
  /// `made_while_dropping`, if given, receives the attempt's allocations as they stand after its
  /// boxes and hooks were dropped, just before they are freed (a destructor run by the drop may
  /// allocate: a weft::shared made and dropped there, whose handle entries the caller then skips).
  void segment_abort(bool quarantine = false, std::uint64_t tag = 0,
                     alloc_log::ranges* made_while_dropping = nullptr) noexcept;
  /// At the head: takes the token and reserves every tvar read or written, so that nothing can
  /// invalidate the attempt any more. False if something read has changed since (call segment_abort).
  bool segment_make_inevitable() noexcept;
  bool is_segment() const noexcept { return segment_; }
  /// The attempt's redo log in program order (WEFT_CHECK=replay compares two runs of a segment).
  template <class F>
  void for_each_write(F&& f) const {
    for (std::uint32_t i = 0; i < writes_.size; ++i) f(writes_.data[i]);
  }
  /// WEFT_CHECK=replay: the lock word of each tvar the attempt read, in read order, with the tvar;
  /// false (and `out` incomplete) if one has changed since the attempt read it or is being committed.
  /// Between two runs of a segment, equal words mean the runs read the same values (another thread's
  /// commit in between changes the word). O(reads); only the checker calls it.
  template <class F>
  bool for_each_read_version(F&& f) const noexcept {
    for (std::uint32_t i = 0; i < reads_.size; ++i) {
      const std::uint64_t m = speculative_load(reads_.data[i].var->meta, std::memory_order_seq_cst);
      if ((m & lock_bit) || version_of(m) > rv_) return false;
      f(reads_.data[i].var, m);
    }
    return true;
  }
  /// Inside a nested atomically or or_else (where a switch point is refused).
  bool in_scope() const noexcept { return scope_depth_ != 0; }
  /// Inside tvar::view's function (where a tasklet or channel operation is refused too: in a segment
  /// it ends the segment, after which the viewed value may be replaced and freed).
  bool in_view() const noexcept { return view_depth_ != 0; }
  void view_enter() noexcept { ++view_depth_; }
  void view_leave() noexcept { --view_depth_; }
  /// A segment's outermost nested atomically (or or_else) ended with `m` closed: with one worker it
  /// was a transaction of its own and its on_commit hooks ran now. If it registered any, the segment
  /// waits for its turn (parks until the head, goes on inevitable) and runs them here, so that their
  /// effects are visible after atomically returns and an exception from one propagates from it, as
  /// with one worker. Throws what a hook throws.
  [[gnu::always_inline]] void segment_scope_committed(const scope_mark& m) {
    if (scope_depth_ != 0) return;
    if (abort_hooks_.size() > m.abort_hooks) [[unlikely]]
      drop_scope_abort_hooks(m);
    if (commit_hooks_.size() > m.commit_hooks) [[unlikely]]
      run_scope_commit_hooks(m);
  }
  /// The memory the attempt allocated (still owned by it).
  alloc_log::ranges attempt_allocations() const noexcept { return allocs_.ranges_after(0); }
  /// Before a segment's rollback frees [p, p + n), memory the attempt got outside the allocation log
  /// (an exception object the C++ runtime allocated): the tvars the attempt made in it go with it (their
  /// boxes are freed), as those in its logged allocations do. O(tvars the attempt made).
  void drop_created_within(const void* p, std::size_t n) noexcept;
  /// Runs `drop`, which destroys objects the runtime kept from the current attempt (an exception
  /// escaping an aborted segment), before segment_abort: what they free that the attempt allocated is
  /// freed once, not again by the rollback; older memory is freed as outside any transaction.
  template <class F>
  void release_attempt_objects(F&& drop) {
    alloc_log_release_scope scope(allocs_);
    drop();
  }
  /// Inside or_else's first branch (where retry() is allowed in a tasklet).
  bool in_or_else() const noexcept { return or_else_depth_ != 0; }
  void or_else_enter() noexcept { ++or_else_depth_; }
  void or_else_leave() noexcept { --or_else_depth_; }

  void add_commit_hook(std::function<void()> fn);
  void add_abort_hook(std::function<void()> fn);
  void make_inevitable(const char* reason);
  bool inevitable() const noexcept { return inevitable_ || solo_pinned_; }
  /// Solo mode (see transaction.cpp): this descriptor is the only one registered, and its current
  /// attempt runs without locks, read log or validation.
  bool solo() const noexcept { return solo_; }

  counters stats;
  std::thread::id thread;
  /// The ordered run (scheduler/src/ordered.cpp) this descriptor belongs to — one of its segments',
  /// or a thread's that the run uses — or nullptr. Written under the STM's registry lock (see
  /// sole_run_begin).
  std::atomic<const void*> run{nullptr};
  /// A segment record's descriptor (segment_register), not a thread's own: written and read under
  /// the STM's registry lock (stats() tells the two apart by it).
  bool segment_record = false;

 private:
  static constexpr std::uint32_t linear_limit = 8;

  // The write log's index (built once the log outgrows linear_limit): a hash of the tvar's address
  // picks a slot (open addressing over writes_, at most half full) and two bits of a 2,048-bit
  // filter. Most lookups in a big log are misses (a read or first write of a tvar not yet written:
  // the bank's transfers), answered by the filter alone, without touching the table.
  static std::uint64_t write_hash(const tvar_base* v) noexcept {
    return (reinterpret_cast<std::uintptr_t>(v) >> 4) * 0x9E3779B97F4A7C15ULL;  // Fibonacci hashing
  }
  static constexpr unsigned filter_words = 32;
  // A blocked filter: the hash picks one of the 32 words and two bits in it (one load to answer). Its
  // bits 35..51, well mixed by the multiplication and apart from the slot's top bits.
  static unsigned filter_word(std::uint64_t h) noexcept {
    return static_cast<unsigned>((h >> 35) & (filter_words - 1));
  }
  static std::uint64_t filter_mask(std::uint64_t h) noexcept {
    return (std::uint64_t{1} << ((h >> 40) & 63)) | (std::uint64_t{1} << ((h >> 46) & 63));
  }
  bool filter_may_hold(std::uint64_t h) const noexcept {
    const std::uint64_t m = filter_mask(h);
    return (filter_[filter_word(h)] & m) == m;
  }
  void filter_add(std::uint64_t h) noexcept { filter_[filter_word(h)] |= filter_mask(h); }
  // Entry i into the index (at most half full: a free slot exists).
  void insert_index(std::uint32_t i, std::uint64_t h) noexcept {
    const std::uint32_t mask = index_.size - 1;
    auto s = static_cast<std::uint32_t>(h >> index_shift_);
    while (index_.data[s]) s = (s + 1) & mask;
    index_.data[s] = i + 1;
    filter_add(h);
    ++index_count_;
  }
  void append_write(tvar_base& v, std::uint64_t b, void (*drop)(void*), const std::source_location& where) {
    if (inevitable_ && !exclusive_) reserve(v);
    write_entry& e = writes_.emplace();
    e.var = &v;
    e.bits = b;
    e.drop = drop;
    e.where = where;
  }
  // Invariant: the index covers the whole log exactly when the log is longer than linear_limit (write()
  // indexes past it; reindex() after entries leave).
  [[gnu::always_inline]] const write_entry* find_write(const tvar_base* v) const noexcept {
    if (writes_.size <= linear_limit) {
      for (std::uint32_t i = 0; i < writes_.size; ++i)
        if (writes_.data[i].var == v) return &writes_.data[i];
      return nullptr;
    }
    const std::uint64_t h = write_hash(v);
    if (!filter_may_hold(h)) [[likely]]
      return nullptr;
    return find_write_indexed(v, h);
  }
  write_entry* find_write(const tvar_base* v) noexcept {
    return const_cast<write_entry*>(static_cast<const transaction*>(this)->find_write(v));
  }
  const write_entry* find_write_indexed(const tvar_base* v, std::uint64_t h) const noexcept;
  void index_write(std::uint32_t i);
  void rebuild_index();
  void reindex();
  void drop_undo(const scope_mark& m) noexcept;
  void run_scope_commit_hooks(const scope_mark& m);
  void drop_scope_abort_hooks(const scope_mark& m);
  void replace_write(write_entry& w, std::uint64_t b, const std::source_location& where);
  std::uint64_t read_slow(const tvar_base& v, const std::source_location& where);
  bool extend(std::uint64_t seen) noexcept;
  bool reads_valid(std::uint64_t rv, const read_entry** failed) const noexcept;
  [[noreturn]] void abort_conflict(conflict_kind kind, const tvar_base* v, const std::source_location& where);
  void reserve(const tvar_base& v);
  std::uint64_t read_exclusive(const tvar_base& v) noexcept;
  void release_token() noexcept;  // gives back inevitable_holder (and exclusive_holder if ours)
  void release_reservations() noexcept;
  void release_locks(std::uint32_t count) noexcept;
  bool commit_inevitable();
  bool commit_solo();
  void unpin_solo() noexcept;
  bool commit_locked();
  bool commit_sole_run();
  /// The read log is full: grows it, and in a segment asked to stop (see segment_watch_stop) calls
  /// the stop hook first, as operator new does: a loop that only reads tvars stops too.
  [[gnu::noinline]] void reads_full();
  void begin_slow(std::uint64_t solo);
  bool solo_claimed(std::uint64_t solo) const noexcept;
  void start_attempt(bool solo, std::uint64_t token) noexcept;
  std::uint64_t solo_revoked(std::uint64_t b);
  bool install_writes() noexcept;
  void forget_logged(const tvar_base* v) noexcept;
  void forget_logged_in(const alloc_log::ranges& freed) noexcept;
  [[noreturn]] void signal_swallowed();
  void retire_replaced() noexcept;
  void write_back_and_unlock(std::uint64_t wv) noexcept;
  void finish_destroyed_tvars() noexcept;
  void reset_attempt() noexcept;
  void clear_attempt() noexcept;
  std::vector<std::function<void()>> discard_attempt(bool free_created) noexcept;
  void drop_created_from(std::uint32_t first, std::size_t allocs) noexcept;
  void drop_created_on_stack() noexcept;
  void record_conflict(conflict_kind kind, const tvar_base* v, const std::source_location& where) noexcept;
  void backoff() noexcept;

  std::uint64_t rv_ = 0;
  std::uint64_t last_clock_ = 0;  ///< the newest clock value this descriptor has seen
  bool solo_ = false;             ///< this attempt runs solo
  std::uint64_t solo_token_ = 0;  ///< solo_state when it began
  bool solo_blocked_ = false;     ///< retry() in a solo attempt: run normally until the commit
  /// A solo attempt made inevitable: in_solo stays up until it ends (a revoker waits for it).
  bool solo_pinned_ = false;
  bool inevitable_ = false;
  bool segment_ = false;          ///< a tasklet segment's transaction (see segment_begin)
  const void* stack_lo_ = nullptr;  ///< segment_stack()
  const void* stack_hi_ = nullptr;
  std::uint32_t or_else_depth_ = 0;
  bool want_inevitable_ = false;
  /// Why the next attempt starts inevitable (reported to the observer when it does), or nullptr.
  const char* inevitable_reason_ = nullptr;
  bool holds_token_ = false;
  bool exclusive_ = false;  // holds exclusive_holder too: reads unlogged, no reservations (segments)
  bool measuring_ = false;
  std::uint32_t consecutive_aborts_ = 0;
  std::uint32_t scope_depth_ = 0;
  std::uint32_t view_depth_ = 0;  // in_view
  std::uint32_t created_floor_ = 0;  ///< created_ entries below it were made before the innermost scope
  std::uint8_t signal_pending_ = 0;  ///< bits: 1 conflict, 2 retry, thrown and not yet handled
  std::uint64_t attempt_start_ns_ = 0;
  std::uint64_t ran_ns_ = 0, run_since_ns_ = 0;  ///< a segment's time running (attach to detach), when measuring_
  std::uint64_t attempt_ns() const noexcept;
  std::uint64_t rng_ = 0x9e3779b97f4a7c15ULL;
  log_array<read_entry> reads_;
  log_array<write_entry> writes_;
  log_array<const tvar_base*> reserved_;  ///< inevitable: tvars whose reserved bit we set
  struct undo_entry {
    std::uint32_t index;
    std::uint64_t bits;
    std::source_location where;
  };
  log_array<undo_entry> undo_;             ///< or_else: write entries overwritten inside a scope
  struct tvar_entry {
    tvar_base* var;
    void (*drop)(void*);  ///< boxed tvars: frees a box
    /// destroyed_ only: the tvar lived on the segment's own stack, which the tasklet reuses before the
    /// commit: its committed box (`bits`) was read when it died, and the commit touches nothing there.
    bool dead_storage = false;
    std::uint64_t bits = 0;
  };
  log_array<tvar_entry> created_;    ///< tvars constructed in the attempt (var == nullptr: since destroyed)
  log_array<tvar_entry> destroyed_;  ///< older tvars destroyed in the attempt
  log_array<std::uint32_t> index_;         ///< open addressing over writes_ (index + 1; 0 = empty)
  std::uint32_t index_shift_ = 0;          ///< 64 - log2(index_.size): a slot is write_hash >> it
  std::uint32_t index_count_ = 0;          ///< entries in the index
  std::uint32_t index_hint_ = 0;           ///< index_count_ of the last indexed attempt (see clear_attempt)
  std::uint64_t filter_[filter_words];     ///< valid while index_.size != 0
  /// At commit: a tvar we locked had a version newer than rv_ (a blind write to a tvar changed since
  /// we began). Otherwise a read of a tvar we hold locked is valid without looking up its entry.
  bool stale_write_locked_ = false;
  std::vector<std::function<void()>> commit_hooks_, abort_hooks_;
  /// The abort hooks of undone scopes while they run (rollback_scope), innermost last.
  std::vector<std::vector<std::function<void()>>> running_abort_hooks_;
  void drop_running_abort_hooks() noexcept;
  alloc_log allocs_;
  alloc_log* saved_log_ = nullptr;
  epoch_slot* epoch_ = nullptr;

 public:
  /// Raised while a solo attempt writes back, or from its become_inevitable() to its end: a revoker
  /// waits until it drops.
  std::atomic<bool> in_solo{false};
};

// constinit: no thread-local initialisation wrapper on every access.
__attribute__((tls_model("initial-exec"))) extern constinit thread_local transaction* current_tx;

/// The transaction running on this thread, or nullptr.
inline transaction* current_transaction() noexcept { return current_tx; }

/// tvar::view's function runs inside one (see scheduler_ops_refused and transaction::in_view).
class view_scope {
 public:
  explicit view_scope(transaction* tx) noexcept : tx_(tx) {
    if (tx_) tx_->view_enter();
    else scheduler_ops_refused += refused_in_view;
  }
  ~view_scope() {
    if (tx_) tx_->view_leave();
    else scheduler_ops_refused -= refused_in_view;
  }
  view_scope(const view_scope&) = delete;
  view_scope& operator=(const view_scope&) = delete;

 private:
  transaction* tx_;
};
__attribute__((tls_model("initial-exec"))) extern constinit thread_local transaction* thread_tx;
transaction& make_thread_transaction();
/// Registers a segment descriptor of ordered run `run` (for stats(), and so that no thread runs solo
/// beside segments); unregister folds its counters into the departed total.
void segment_register(transaction* tx, const void* run = nullptr);
void segment_unregister(transaction* tx) noexcept;
/// Sole run (stm/src/transaction.cpp): ordered run `run` has gone parallel on the calling thread (its
/// main thread), and its segments commit one at a time under its commit lock; while every registered
/// descriptor is the run's, they commit without tvar locks. The calling thread's descriptor, and
/// those that `thread_run` assigns to the run, count as the run's: their transactions outside
/// segments must never overlap a segment's commit (main's code runs at the head; the commits' own
/// work runs under the commit lock). sole_run_end: no commit of the run is in flight any more, nor
/// will be.
void sole_run_begin(const void* run) noexcept;
void sole_run_end(const void* run) noexcept;
/// After sole_run_end, when run goes parallel again (ordered.cpp, return_to_parallel): a worker
/// thread's own descriptor, if it has one, is the run's again, as when the thread started.
void sole_run_rejoin(const void* run) noexcept;
/// Set by the scheduler: the ordered run the calling thread works for, or nullptr (a new
/// descriptor's `run`).
extern std::atomic<const void* (*)() noexcept> thread_run;
/// This thread's descriptor (made on first use).
inline transaction& thread_transaction() {
  if (transaction* tx = thread_tx) [[likely]]
    return *tx;
  return make_thread_transaction();
}

}  // namespace weft::detail
