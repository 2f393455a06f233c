// weft/shared.hpp — weft::shared<T>: a reference-counted pointer whose count rolls back with a segment.
//
// What it is for: objects that several tasklets hold at once — a message sent to many receivers, a
// world object that agents keep pointers to, an immutable configuration. With one worker it behaves
// as std::shared_ptr does. In ordered mode (README, "Parallel ordered mode") a tasklet's segment may
// be rolled back and run again: a std::shared_ptr copy or drop made in it changes the count for good
// (its counting is inline atomics in the standard library's header, which weft cannot see), so the
// re-run counts a second time and the object is destroyed while still held — a crash. A
// weft::shared copy made in a segment is undone if the segment is rolled back, and a drop waits for
// its commit: the object's destructor runs once, when the segment that dropped its last handle
// commits, in serial order (as channel and tasklet handles do, DESIGN.md §4.7.5). What it prints with
// weft::print comes where one worker prints it, between the segment's lines from before and after
// the drop; its other effects (tvar writes) follow the segment's own. In a segment that runs
// inevitable (become_inevitable, or at the head) a drop is final at once. A handle held by a
// tvar's value is dropped when the epoch GC frees that version after it was replaced (on the thread
// that committed the replacement, once no reader can hold the old version): a few commits later, at
// a point that differs between worker counts and runs, so the destructor of an object reached only
// through tvar values must have no visible effect (no weft::print, no tvar write; round 11 found
// the output order differing between one and two workers).
//
// Thread-safety: as std::shared_ptr — the count is atomic (copies and drops of handles to one
// object from several threads are safe); one handle object must not be changed by two threads at
// once. What the object holds is plain memory: rollback does not restore it, so state that tasklets
// change while they run belongs in tvars (the object may hold tvars); treat a shared object as
// immutable, or as a home for tvars. No aliasing constructor, no weak pointers, no custom deleters,
// no conversion to a base class: a handle points at the object its make() made.
#pragma once

#include <atomic>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "weft/detail/stm_core.hpp"
#include "weft/detail/tasklet_impl.hpp"

namespace weft {

namespace detail {

/// The header of a shared object's block: its count and how to destroy the block.
struct shared_block {
  std::atomic<std::size_t> refs{1};
  void (*destroy)(shared_block*) noexcept = nullptr;
};

inline void shared_retain(shared_block* b) noexcept {
  if (!b) return;
  b->refs.fetch_add(1, std::memory_order_relaxed);  // made from an existing reference
  if (handle_log* log = segment_handles) [[unlikely]]
    log->record(b, handle_log::shared_inc);  // undone if the segment is rolled back
}
/// Drops a reference at once, whatever runs on the thread (the commit path).
inline void shared_release_now(shared_block* b) noexcept {
  // acq_rel: the last release sees every write made through the other references before destroying.
  if (b && b->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) b->destroy(b);
}
inline void shared_release(shared_block* b) noexcept {
  if (!b) return;
  if (handle_log* log = segment_handles; log && !log->releases_now) [[unlikely]] {
    log->record(b, handle_log::shared_dec);  // at the segment's commit
    return;
  }
  shared_release_now(b);
}

template <class T>
struct shared_object final : shared_block {
  template <class... A>
  explicit shared_object(A&&... a) : value(std::forward<A>(a)...) {
    destroy = [](shared_block* b) noexcept {
      // A tasklet or channel operation in the destructor is refused (std::logic_error, and so
      // std::terminate from it), at every worker count: in ordered mode the last release happens
      // at a segment's commit, outside any tasklet.
      const scheduler_ops_refused_scope refused(refused_in_shared_destructor);
      delete static_cast<shared_object*>(b);
    };
  }
  T value;
};

}  // namespace detail

/// A counted handle to one object made by weft::shared<T>::make(...), or empty. Copy to share, move to
/// hand over; the object is destroyed when the last handle goes (in a segment: when that segment
/// commits). Its destructor may print and use tvars, but no tasklet or channel operation (a send,
/// schedule(), spawn, ...): that is refused with std::logic_error, at every worker count, which ends
/// the program (a destructor cannot throw) — at a commit it would run outside any tasklet.
/// `shared<const T>` is made from a `shared<T>` (the same object, read-only).
template <class T>
class shared {
  static_assert(!std::is_reference_v<T> && !std::is_array_v<T>, "weft::shared<T> holds one object");
  using block = detail::shared_object<std::remove_cv_t<T>>;

 public:
  using element_type = T;

  /// Empty (no allocation): what a default-constructed message field holds.
  constexpr shared() noexcept = default;
  constexpr shared(std::nullptr_t) noexcept {}
  shared(const shared& o) noexcept : b_(o.b_) { detail::shared_retain(b_); }
  shared(shared&& o) noexcept : b_(std::exchange(o.b_, nullptr)) {}
  /// A read-only handle to the object of a writable one.
  template <class U, class = std::enable_if_t<std::is_const_v<T> && std::is_same_v<U, std::remove_const_t<T>>>>
  shared(const shared<U>& o) noexcept : b_(o.b_) {
    detail::shared_retain(b_);
  }
  template <class U, class = std::enable_if_t<std::is_const_v<T> && std::is_same_v<U, std::remove_const_t<T>>>>
  shared(shared<U>&& o) noexcept : b_(std::exchange(o.b_, nullptr)) {}
  shared& operator=(shared o) noexcept {
    std::swap(b_, o.b_);
    return *this;
  }
  ~shared() { detail::shared_release(b_); }

  /// Makes T from `args` in a new counted block and returns the first handle to it. Throws what
  /// allocating or T's constructor throws (nothing is left behind). In a segment that is rolled back,
  /// the object goes with the attempt, without its destructor (its construction is rolled back too).
  /// (A member, not a free make_shared: an unqualified call with a std:: argument would also find
  /// std::make_shared.)
  template <class... A>
  static shared make(A&&... args) {
    static_assert(!std::is_const_v<T>, "make a weft::shared<T> and convert it to weft::shared<const T>");
    return shared(new block(std::forward<A>(args)...));
  }

  /// The object, or nullptr if empty. O(1), never throws.
  T* get() const noexcept { return b_ ? &b_->value : nullptr; }
  /// The object; the handle must not be empty.
  T& operator*() const noexcept { return b_->value; }
  T* operator->() const noexcept { return &b_->value; }
  explicit operator bool() const noexcept { return b_ != nullptr; }
  /// Handles to the object (0 if empty). As std::shared_ptr's, a hint when other threads copy it; in
  /// a segment, its copies count at once and its drops only once it commits.
  std::size_t use_count() const noexcept { return b_ ? b_->refs.load(std::memory_order_relaxed) : 0; }
  /// Drops this handle's reference; the handle becomes empty.
  void reset() noexcept { shared().swap(*this); }
  void swap(shared& o) noexcept { std::swap(b_, o.b_); }

  /// Identity: handles are equal when they point at the same object. There is no ordering and no
  /// std::hash: the only identity a shared object has is its address, which differs from run to run
  /// and between worker counts, so a map keyed by it would iterate in a different order in each.
  friend bool operator==(const shared& a, const shared& b) noexcept { return a.b_ == b.b_; }
  friend bool operator==(const shared& a, std::nullptr_t) noexcept { return a.b_ == nullptr; }

 private:
  template <class U>
  friend class shared;
  explicit shared(block* b) noexcept : b_(b) {}
  block* b_ = nullptr;
};

}  // namespace weft

