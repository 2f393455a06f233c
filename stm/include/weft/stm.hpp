// weft/stm.hpp — weft's software transactional memory (DESIGN.md §6), usable from plain threads.
//
//   weft::tvar<int> x{0, "x"};
//   weft::atomically([&] { x.set(x.get() + 1); });
//
// TL2/LSA: a global version clock (lazy: commits read it, readers that meet newer data advance it),
// a versioned lock per tvar, a redo log, commit-time locking; reads are validated as they happen
// (opacity: a transaction never sees an inconsistent state, even one that will abort), and a read of
// something newer than the snapshot extends the snapshot instead of aborting when everything read so
// far is still current. Read-only transactions commit without locks or clock writes. While one
// thread alone uses the STM its transactions run solo (no locks, no read log; stm_options::solo).
// A trivially copyable T of at most 8 bytes is stored inline; any other T lives in an immutable box
// replaced on each committed write (old boxes go to the epoch GC).
//
// Contract inside atomically(f): f may run several times; it must keep its effects to tvars, to
// memory it allocates (freed again if the attempt aborts), and to on_commit/on_abort callbacks.
// An exception escaping f aborts the transaction (nothing it wrote becomes visible) and propagates;
// memory f allocated in that attempt is then left alive, since the exception may refer to it.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <new>
#include <source_location>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "weft/detail/stm_core.hpp"
#include "weft/observe.hpp"

namespace weft {

/// A transactional variable holding a T. A value a write replaces (or a dying tvar's last value) is
/// destroyed later, by the epoch collector, once no transaction can still be reading it: when that
/// happens differs with the worker count and the timing, so T's destructor should only release what
/// the value owns — output or other effects from it come at times one worker does not reproduce.
template <class T>
class tvar : private detail::tvar_base {
  static_assert(std::is_copy_constructible_v<T>, "tvar<T> needs a copyable T");
  static_assert(sizeof(detail::tvar_base) == 16, "a tvar is two words");
  static constexpr bool is_inline = std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(std::uint64_t);
  struct box {
    T value;
  };

 public:
  explicit tvar(T init = T{}, const char* name = nullptr) : tvar_base(name) {
    bits.store(encode(std::move(init)), std::memory_order_relaxed);
    // Made inside a transaction (say, in a node allocated there): nobody else can see it before the
    // commit, and its box goes if the attempt aborts.
    if (detail::transaction* tx = detail::current_transaction()) [[unlikely]]
      tx->tvar_created(this, is_inline ? nullptr : &drop_box);
  }
  /// Inside a transaction (a `delete` of the object holding it) the tvar is only *marked*
  /// destroyed: its box goes to the epoch GC when the transaction commits, and nothing happens if
  /// the attempt aborts — the object is then still reachable and must stay intact.
  ~tvar() {
    if (detail::transaction* tx = detail::current_transaction()) [[unlikely]] {
      tx->tvar_destroyed(this, is_inline ? nullptr : &drop_box);
      return;
    }
    destroy(is_inline ? nullptr : &drop_box);
  }
  tvar(const tvar&) = delete;
  tvar& operator=(const tvar&) = delete;

  /// In a transaction: a validated read. Outside: one atomic read.
  [[gnu::always_inline]] T get(std::source_location where = std::source_location::current()) const {
    if (detail::transaction* tx = detail::current_transaction()) [[likely]]
      return decode(tx->read(*this, where));
    if constexpr (is_inline) {
      return decode(read_direct());
    } else {
      detail::epoch_guard guard;
      return decode(read_direct());
    }
  }

  /// f(const T&) on the value get() would return, without copying it; returns what f returns.
  /// For values too large to copy at every read (a row of cells, a lookup table): a published
  /// value is never changed in place, so the reference stays valid until f returns. f must not
  /// keep the reference, and must not set() this tvar (the reference would then be to the old
  /// value). Same read semantics, conflicts and cost as get() minus the copy.
  /// A tasklet or channel operation inside f (a send, schedule(), spawn, ...) throws
  /// std::logic_error, at every worker count: in a tasklet in ordered mode it would end the segment,
  /// after which the value may be replaced and freed under f. Copy what you need, act after view.
  template <class F>
  [[gnu::always_inline]] decltype(auto) view(F&& f,
                                             std::source_location where = std::source_location::current()) const {
    if (detail::transaction* tx = detail::current_transaction()) [[likely]] {
      const detail::view_scope scope(tx);
      if constexpr (is_inline) {
        const T v = decode(tx->read(*this, where));
        return std::forward<F>(f)(v);
      } else {
        return std::forward<F>(f)(std::as_const(reinterpret_cast<const box*>(tx->read(*this, where))->value));
      }
    }
    const detail::view_scope scope(nullptr);
    if constexpr (is_inline) {
      const T v = decode(read_direct());
      return std::forward<F>(f)(v);
    } else {
      detail::epoch_guard guard;  // the box outlives f even if another thread replaces it meanwhile
      return std::forward<F>(f)(std::as_const(reinterpret_cast<const box*>(read_direct())->value));
    }
  }

  /// In a transaction: buffered until commit. Outside: one atomic write.
  [[gnu::always_inline]] void set(T v, std::source_location where = std::source_location::current()) {
    std::uint64_t b = encode(std::move(v));
    if (detail::transaction* tx = detail::current_transaction()) [[likely]] {
      tx->write(*this, b, is_inline ? nullptr : &drop_box, where);
      return;
    }
    write_direct(b, is_inline ? nullptr : &drop_box, where);
  }

  /// f(T&) on a private copy, then written back.
  template <class F>
  void modify(F&& f, std::source_location where = std::source_location::current()) {
    T copy = get(where);
    std::forward<F>(f)(copy);
    set(std::move(copy), where);
  }

  /// The name given at construction, or nullptr.
  const char* name() const noexcept { return detail::tvar_name(this); }

 private:
  static std::uint64_t encode(T v) {
    if constexpr (is_inline) {
      std::uint64_t b = 0;
      std::memcpy(&b, &v, sizeof(T));
      return b;
    } else {
      // Boxes bypass the transactional allocation log: the STM frees them itself (std::free, for
      // both). An over-aligned T gets its alignment (malloc's is 16: newcomer round 24 viewed an
      // alignas(64) value at a misaligned address, undefined behaviour at every worker count).
      void* mem;
      if constexpr (alignof(box) > alignof(std::max_align_t))
        mem = std::aligned_alloc(alignof(box), sizeof(box));  // (sizeof is a multiple of alignof)
      else
        mem = std::malloc(sizeof(box));
      if (!mem) throw std::bad_alloc();
      return reinterpret_cast<std::uint64_t>(new (mem) box{std::move(v)});
    }
  }
  static T decode(std::uint64_t b) {
    if constexpr (is_inline) {
      T v;
      std::memcpy(&v, &b, sizeof(T));
      return v;
    } else {
      return reinterpret_cast<const box*>(b)->value;
    }
  }
  static void drop_box(void* p) noexcept {
    if (!p) return;
    static_cast<box*>(p)->~box();
    std::free(p);
  }
};

/// Runs f as a transaction, again and again until it commits; returns what f returned.
///
/// Inside a transaction, atomically(f) is a nested block of the enclosing one (a scope, as in
/// ScalaSTM and GHC's catchSTM): if f returns, its effects join the enclosing transaction; if an
/// exception escapes f, what f did is undone (its tvar writes, tvars made or destroyed, on_commit
/// hooks; its on_abort hooks run) and the exception propagates to the enclosing code, which may
/// catch it and go on. Memory f allocated stays, as it does when an exception ends a whole
/// transaction (the exception may refer to it). Conflicts and retry() end the whole transaction.
///
/// Throws what f throws (after aborting the attempt), and std::logic_error when f caught weft's
/// conflict or retry signal without rethrowing it (a `catch (...)` inside a transaction must rethrow).
template <class F>
auto atomically(F&& f) -> std::invoke_result_t<F&> {
  using R = std::invoke_result_t<F&>;
  if (detail::transaction* outer = detail::current_transaction()) {
    const detail::transaction::scope_mark mark = outer->open_scope();
    auto block = [&]() -> R {
      try {
        if constexpr (std::is_void_v<R>) {
          f();
          outer->scope_closing();
          outer->close_scope(mark);
        } else {
          R result = f();
          outer->scope_closing();
          outer->close_scope(mark);
          return result;
        }
      } catch (const detail::tx_abort_signal&) {
        outer->close_scope(mark);  // the whole attempt ends: nothing to undo here
        throw;
      } catch (const detail::tx_retry_signal&) {
        outer->close_scope(mark);
        throw;
      } catch (...) {
        outer->rollback_scope(mark, /*keep_allocations=*/true);
        throw;
      }
    };
    // A segment's hooks run after the block is closed: one that throws leaves it committed.
    if constexpr (std::is_void_v<R>) {
      block();
      if (outer->is_segment()) outer->segment_scope_committed(mark);
      return;
    } else {
      R result = block();
      if (outer->is_segment()) outer->segment_scope_committed(mark);
      return result;
    }
  }
  detail::transaction& tx = detail::thread_transaction();
  for (;;) {
    tx.begin();
    try {
      if constexpr (std::is_void_v<R>) {
        f();
        if (tx.commit()) {
          tx.after_commit();
          return;
        }
      } else {
        R result = f();
        if (tx.commit()) {
          tx.after_commit();
          return result;
        }
      }
    } catch (const detail::tx_abort_signal&) {
      // a conflict seen while running: rolled back below
    } catch (const detail::tx_retry_signal&) {
      tx.wait_for_change();  // rolls back, then waits until something read has changed
      continue;
    } catch (...) {
      // From f: the attempt is abandoned. From an on_commit callback (run by after_commit once the
      // transaction is over): it committed; the exception just propagates.
      if (detail::current_transaction() == &tx) tx.abort_by_exception();
      throw;
    }
    tx.rollback_after_conflict();
  }
}

/// Blocks the transaction until a tvar it has read changes, then runs it again.
[[noreturn]] void retry();

/// Runs f; if f calls retry(), undoes what f did and runs g instead (whose retry() propagates).
template <class F, class G>
auto or_else(F&& f, G&& g) -> std::invoke_result_t<F&> {
  detail::transaction* tx = detail::current_transaction();
  // Outside atomically (in a tasklet's segment too) it is a transaction of its own, whose on_commit
  // hooks run when it ends.
  if (!tx || (tx->is_segment() && !tx->in_scope()))
    return atomically([&]() -> std::invoke_result_t<F&> { return or_else(f, g); });
  detail::transaction::scope_mark mark = tx->open_scope();
  struct branch {  // retry() is allowed in a tasklet's segment only here
    detail::transaction* tx;
    explicit branch(detail::transaction* t) noexcept : tx(t) { tx->or_else_enter(); }
    ~branch() { tx->or_else_leave(); }
  };
  try {
    branch in_branch(tx);
    if constexpr (std::is_void_v<std::invoke_result_t<F&>>) {
      f();
      tx->close_scope(mark);
      return;
    } else {
      auto r = f();
      tx->close_scope(mark);
      return r;
    }
  } catch (const detail::tx_retry_signal&) {
    tx->retry_consumed();
    tx->rollback_scope(mark);
  } catch (...) {
    tx->close_scope(mark);  // an exception leaves the scope like any block; a conflict aborts it all
    throw;
  }
  return g();
}

/// Runs fn after the enclosing transaction commits (at once, outside a transaction), in order. In a
/// tasklet in ordered mode the hooks run where they would with one worker (when the outermost
/// atomically ends; at once outside atomically): the segment first waits for its turn (parks until
/// its tasklet is the head and goes on inevitable), so a segment that registers hooks does not run
/// in parallel from there on. An exception from a hook propagates from that atomically, which stays
/// committed.
void on_commit(std::function<void()> fn);
/// Runs fn each time the enclosing transaction's attempt is rolled back (ignored outside one). In a
/// tasklet in ordered mode: when the atomically block itself is abandoned (an exception escapes it);
/// never when the segment around a finished block is rolled back and run again (with one worker that
/// never happens). A rolled-back block's hooks run (an or_else branch that retried, a nested block
/// an exception left: inside the enclosing transaction, whose tvars they may write) and are
/// destroyed before the memory the block allocated is freed: fn may hold and read what the block
/// made (a std::shared_ptr, a string). An exception fn throws propagates from atomically (from the
/// nested block or or_else), the attempt undone — except when the block is a transaction of its own
/// (the outermost atomically, in main or in a tasklet) left by an exception: that exception goes on
/// and fn's is dropped, at any worker count. Such a block's hooks run once it is undone, outside any
/// transaction, so in a tasklet they may reach switch points (send, schedule); in ordered mode the
/// segment first waits for its turn (parks until the head and goes on inevitable), as for on_commit.
/// Everywhere else a switch point in fn is one inside atomically: refused (std::logic_error).
void on_abort(std::function<void()> fn);
/// Makes the enclosing transaction inevitable: it cannot abort any more (at most one at a time;
/// others go on committing unless they conflict with it). For irreversible work. No-op outside.
/// Where it is called the attempt goes on: what the block did before the call is not run again
/// — unless other threads' commits leave it no choice (something it read has changed since, or
/// another transaction is inevitable): then it starts over, inevitable from the start.
/// A thread alone in the STM (solo mode, one worker with no other thread using it) stays alone
/// until the transaction ends: a thread that starts using the STM meanwhile waits for it, as beside
/// libitm's serial-irrevocable mode — so never wait inside an inevitable transaction for another
/// thread's transaction. In a tasklet in ordered mode the segment first waits for its turn (the
/// head), as for on_commit.
void become_inevitable(const char* reason);

struct stm_counters {
  std::uint64_t commits = 0;            ///< all committed transactions
  std::uint64_t read_only_commits = 0;  ///< of which wrote nothing (no lock, no clock increment)
  std::uint64_t aborts_conflict = 0;    ///< read-write conflicts seen while reading
  std::uint64_t aborts_validation = 0;  ///< read-write conflicts seen at commit
  std::uint64_t aborts_locked = 0;      ///< write-write: a lock stayed taken
  std::uint64_t aborts_inevitable = 0;  ///< lost to the inevitable transaction
  std::uint64_t aborts_exception = 0;   ///< an exception escaped
  std::uint64_t retries = 0;            ///< retry() calls (each abandons its attempt and waits)
  std::uint64_t inevitable = 0;         ///< transactions that ran inevitable
  std::uint64_t extensions = 0;         ///< snapshot extensions (LSA)
  std::uint64_t locks_acquired = 0;     ///< tvar locks taken at commit
  std::uint64_t solo = 0;               ///< of the commits, run solo (the only thread using the STM)
  /// Of the commits, tasklet segments' made without tvar locks while their ordered run was the only
  /// writer (stm_options::sole_run).
  std::uint64_t sole_run = 0;
  /// Objects allocated with `new` in attempts (or or_else branches) that were rolled back, and so freed
  /// at once.
  std::uint64_t allocations_undone = 0;
  /// `delete`s of memory older than the attempt, committed and handed to the epoch GC (freed once no
  /// transaction can still read them; detail::epoch_pending() counts those not freed yet).
  std::uint64_t frees_deferred = 0;
  std::uint64_t aborts() const noexcept {
    return aborts_conflict + aborts_validation + aborts_locked + aborts_inevitable + aborts_exception;
  }
  stm_counters& operator+=(const stm_counters& o) noexcept;
};

struct stm_thread_stats {
  std::thread::id thread;  ///< default id: threads that have exited, summed (or `segments`)
  stm_counters counters;
  /// The transactions of ordered runs' tasklet segments, live and ended, summed (one entry, whatever
  /// thread ran them: run_stats() has the per-thread view of a run); `thread` is the default id.
  bool segments = false;
};

struct stm_stats {
  std::vector<stm_thread_stats> per_thread;
  stm_counters total;
};

stm_stats stats();

struct stm_options {
  unsigned inevitable_after = 8;  ///< consecutive aborts before a transaction runs inevitable
  /// Solo mode: while a single thread uses the STM, its transactions run without locks, read log or
  /// validation (as libitm runs one thread serially). A second thread's first transaction (or direct
  /// tvar write) ends it, waiting for the solo transaction in flight to finish. Also: WEFT_STM_SOLO=0.
  bool solo = true;
  /// Sole run: while the only threads using the STM are those of one ordered run (workers > 1),
  /// its tasklet segments — committed one at a time under the run's commit lock already — commit
  /// without taking a lock per written tvar. Another thread's first transaction (or direct tvar
  /// write) ends it, waiting for a commit in flight. Also: WEFT_STM_SOLE_RUN=0.
  bool sole_run = true;
  /// Privatization safety: while two or more threads use the STM, `delete` outside a transaction
  /// (and a tvar's destruction outside one) goes through the epoch GC, so that memory unlinked by a
  /// committed transaction can be freed at once while doomed readers still hold it. It costs ~45 ns
  /// per delete outside transactions (bench/micro BM_delete_outside_transaction: 7.8 -> 53 ns for a
  /// new + delete pair, measured 2026-11-30); a program that never frees memory transactions may
  /// still read can turn it off. Also: WEFT_STM_PRIVATIZATION=0.
  bool privatization_safe = true;
};
/// Applies `o` to every thread (not from inside a transaction: std::logic_error; inevitable_after
/// == 0: std::invalid_argument).
void configure_stm(const stm_options& o);

}  // namespace weft
