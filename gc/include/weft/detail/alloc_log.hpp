// weft/detail/alloc_log.hpp — transactional allocation (private to weft).
//
// weft replaces the global operator new/delete (gc/src/tx_alloc.cpp). Outside a transaction they are
// malloc/free. While a transaction is active on the thread, its alloc_log is installed and:
//   * memory allocated by `new` is recorded; if the attempt aborts it is freed;
//   * `delete` of memory allocated in the same attempt (and in the current or_else scope) frees it at
//     once; `delete` of older memory is deferred: dropped if the attempt (or the scope) is rolled back,
//     and at commit handed to the epoch GC, because a concurrent transaction may still be reading the
//     object. Memory allocated in the attempt before the innermost open scope counts as older: the
//     scope may be rolled back and the state it returns to may still point to it.
// The log itself allocates with malloc, never through operator new.
#pragma once

#include <atomic>
#include <utility>
#include <cstddef>
#include <cstdint>

namespace weft::detail {

class alloc_log {
 public:
  alloc_log() = default;
  ~alloc_log();
  alloc_log(const alloc_log&) = delete;
  alloc_log& operator=(const alloc_log&) = delete;

  void record_alloc(void* p) noexcept;
  /// True if p was allocated in this attempt, inside the innermost open scope (in any scope while
  /// releasing) (it is now forgotten: the caller frees it).
  bool forget_alloc(void* p) noexcept;
  void defer_free(void* p) noexcept;

  /// Where a nested scope (or_else branch) starts; rollback_to undoes only what came after.
  struct mark {
    std::size_t allocs, frees;
  };
  mark position() const noexcept { return {alloc_count_, free_count_}; }
  /// Allocations before `floor` belong to an enclosing scope: deleting them inside the scope is
  /// deferred like older memory. Returns the previous floor (to restore when the scope ends).
  std::size_t set_floor(std::size_t floor) noexcept {
    const std::size_t old = floor_;
    floor_ = floor;
    return old;
  }
  /// Frees what was allocated after `m` and drops the frees deferred after it; returns the number of
  /// allocations freed.
  std::size_t rollback_to(mark m) noexcept;

  /// The address ranges of the allocations recorded from index `first` on (still owned by the log):
  /// what a rollback to a mark with `allocs == first` frees. Sorted; contains() is a binary search.
  class ranges {
   public:
    ranges() = default;
    ranges(ranges&& o) noexcept : items_(o.items_), count_(o.count_) { o.items_ = nullptr, o.count_ = 0; }
    ranges(const ranges&) = delete;
    ranges& operator=(const ranges&) = delete;
    ranges& operator=(ranges&& o) noexcept {
      std::swap(items_, o.items_);
      std::swap(count_, o.count_);
      return *this;
    }
    ~ranges();
    bool contains(const void* p) const noexcept;

   private:
    friend class alloc_log;
    struct range {
      std::uintptr_t begin, end;
    };
    range* items_ = nullptr;
    std::size_t count_ = 0;
  };
  ranges ranges_after(std::size_t first) const noexcept;
  /// Like rollback_to(m) for what was logged between `m` and `end` only: frees those allocations and
  /// drops those deferred frees; what was logged after `end` stays (moved down to `m`). For code that
  /// runs after a scope ended and before its rollback (on_abort hooks): its allocations and deletes
  /// belong to the enclosing attempt. Returns the number of allocations freed.
  std::size_t rollback_between(mark m, mark end) noexcept;
  /// Drops the frees deferred between `m` and `end` (those deletes did not happen); allocations stay,
  /// and so do the frees deferred after `end` (see rollback_between).
  void drop_frees_between(mark m, mark end) noexcept;
  /// Attempt committed: allocations stay, deferred frees go to the epoch GC; returns their number.
  std::size_t commit() noexcept;
  /// Attempt ended by an exception: allocations stay (the exception may use them), frees are dropped.
  void keep_allocations() noexcept;
  /// Attempt aborted: allocations are freed, deferred frees are dropped; returns the number freed.
  std::size_t abort() noexcept {
    stop_holds_ = 0;  // (a hold's frames are gone with the attempt)
    return rollback_to({0, 0});
  }
  /// As abort(), but the allocations go to the quarantine (alloc_quarantine_start) with `tag` instead
  /// of back to malloc; returns their number.
  std::size_t abort_to_quarantine(std::uint64_t tag) noexcept;
  bool empty() const noexcept { return alloc_count_ == 0 && free_count_ == 0; }
  /// While true (alloc_log_release_scope), a delete of memory the log did not allocate is a plain
  /// delete, not deferred, and `new` is not recorded: code outside the attempt is running (dropping
  /// objects an attempt left behind, on_abort hooks) before the attempt's memory is freed.
  bool releasing() const noexcept { return releasing_; }
  /// The attempt's owner may ask it to stop (scheduler/: a speculative segment doomed by a commit,
  /// which would otherwise run on until its next switch point, or forever on what main's frame held
  /// once main returned): operator new and delete then call alloc_log_stop_hook first.
  void watch_stop(const std::atomic<std::uint8_t>* stop) noexcept { stop_ = stop; }
  bool stop_requested() const noexcept {
    return stop_ && stop_->load(std::memory_order_relaxed) != 0 && !releasing_ && stop_holds_ == 0;
  }

 private:
  const std::atomic<std::uint8_t>* stop_ = nullptr;
  // Allocations in order (for rollback) plus an open-addressing index from address to position
  // (for forget_alloc), built lazily: a segment that allocates 400,000 map nodes and deletes none of
  // them pays no hashing (newcomer round 13: 15% of such a program at 2 workers), and a delete finds
  // a recent allocation by a short scan first.
  struct slot {
    std::uintptr_t key;  // 0 empty, 1 tombstone, else the address
    std::size_t pos;     // its position in allocs_
  };
  static constexpr std::size_t unindexed_scan = 16;  // a longer unindexed tail is indexed first
  void** allocs_ = nullptr;
  std::size_t alloc_count_ = 0, alloc_cap_ = 0;
  void** frees_ = nullptr;
  std::size_t free_count_ = 0, free_cap_ = 0;
  slot* index_ = nullptr;
  std::size_t index_cap_ = 0, index_used_ = 0;
  std::size_t indexed_ = 0;  // allocs_[0, indexed_) are in the index (except the null ones)
  std::size_t floor_ = 0;    // allocs_ entries before it belong to enclosing scopes
  bool releasing_ = false;
  std::uint32_t stop_holds_ = 0;  // alloc_log_stop_hold
  friend class alloc_log_release_scope;
  friend class alloc_log_stop_hold;
  std::size_t find_alloc(const void* p) noexcept;  // p's position in allocs_, or alloc_count_
  void index_catch_up() noexcept;
  bool index_insert(void* p, std::size_t pos) noexcept;
  std::size_t index_find(const void* p) const noexcept;
  void index_erase(void* p) noexcept;
  void index_rebuild(std::size_t cap) noexcept;
  void index_clear() noexcept;
};

__attribute__((tls_model("initial-exec"))) extern constinit thread_local alloc_log* active_log;

/// Privatization safety (DESIGN.md §6): while two or more threads use the STM, memory deleted
/// outside any transaction goes through the epoch GC instead of straight back to malloc, because a
/// transaction that will abort may still be reading it (the object was unlinked by a transaction
/// that committed just before the delete). Set by stm/ under its registry lock.
extern std::atomic<bool> defer_plain_frees;
/// Called by operator new and delete when the active log's stop_requested() (set by scheduler/ at
/// its start; null: nobody asks). May not return: it rolls the attempt back (DESIGN.md §4.3).
/// Atomic: every ordered-mode runtime sets it as it starts, on its own thread.
extern std::atomic<void (*)() noexcept> alloc_log_stop_hook;

/// WEFT_CHECK=replay (scheduler/): memory that rolled-back runs allocated (abort_to_quarantine) is
/// kept allocated, never reused, and a `delete` of it, anywhere, calls `on_stale_delete` with the
/// block and its tag instead of freeing it. Nothing that keeps to the memory contract can still point
/// there (the rollback restored the stack and dropped the attempt's tvar writes and handles): a
/// plain variable shared between segments did, and without the check the rollback's free and that
/// delete would have been a double free. The quarantine holds up to `max_bytes` (oldest freed first:
/// a later delete of those is no longer seen). Call before the run (a second call changes the
/// handler and the limit); thread-safe afterwards. Every delete then takes the quarantine's lock (a
/// checking mode). A handler that returns leaves the block held.
void alloc_quarantine_start(void (*on_stale_delete)(void* block, std::uint64_t tag) noexcept,
                            std::size_t max_bytes = std::size_t{256} << 20) noexcept;

/// The log of the transaction active on this thread, or nullptr.
inline alloc_log* active_alloc_log() noexcept { return active_log; }
/// Installs (or removes, with nullptr) the thread's active log; returns the previous one.
inline alloc_log* set_active_alloc_log(alloc_log* log) noexcept {
  alloc_log* old = active_log;
  active_log = log;
  return old;
}

/// Installs `log` for the scope so that code outside the attempt can run before the attempt's memory
/// is freed — objects the runtime kept from an attempt that is about to be rolled back (an exception
/// escaping a tasklet's aborted segment) destroyed, on_abort hooks run: memory the attempt allocated
/// is freed once, now, and forgotten by the log (its rollback would free it a second time); older
/// memory is freed as by a delete outside any transaction; what is allocated is not recorded (it
/// belongs to the code that runs, not to the attempt).
/// While one lives, operator new and delete do not stop the attempt (alloc_log_stop_hook): the STM
/// holds stops while it runs destructors of values and hooks with its own logs half updated (a
/// replaced box being dropped, a rolled-back scope's writes and hooks). Stopped there, the rollback
/// that follows dropped the same box or hook again (a tvar<std::map> modified six times in a
/// segment: 17 of 20 runs crashed at two workers) and leaked the new one. The stop waits for the
/// next new or delete after the hold.
class alloc_log_stop_hold {
 public:
  explicit alloc_log_stop_hold(alloc_log& log) noexcept : log_(log) { alloc_log_hold_stops(log_); }
  ~alloc_log_stop_hold() { alloc_log_release_stops(log_); }
  /// The same hold for a scope that is not a C++ scope (weft::detail::sink_mutex: from its lock() to
  /// its unlock()). Paired, on one thread, in one attempt.
  static void alloc_log_hold_stops(alloc_log& log) noexcept { ++log.stop_holds_; }
  static void alloc_log_release_stops(alloc_log& log) noexcept { --log.stop_holds_; }
  alloc_log_stop_hold(const alloc_log_stop_hold&) = delete;
  alloc_log_stop_hold& operator=(const alloc_log_stop_hold&) = delete;

 private:
  alloc_log& log_;
};

class alloc_log_release_scope {
 public:
  explicit alloc_log_release_scope(alloc_log& log) noexcept : log_(log), saved_(set_active_alloc_log(&log)) {
    log_.releasing_ = true;
  }
  ~alloc_log_release_scope() {
    log_.releasing_ = false;
    set_active_alloc_log(saved_);
  }
  alloc_log_release_scope(const alloc_log_release_scope&) = delete;
  alloc_log_release_scope& operator=(const alloc_log_release_scope&) = delete;

 private:
  alloc_log& log_;
  alloc_log* saved_;
};

/// Suspends logging in the current scope (weft's own allocations inside a transaction).
class alloc_log_pause {
 public:
  alloc_log_pause() noexcept : saved_(set_active_alloc_log(nullptr)) {}
  ~alloc_log_pause() { set_active_alloc_log(saved_); }

 private:
  alloc_log* saved_;
};

}  // namespace weft::detail
