// weft/tasklet.hpp — tasklet handles (Stackless' `tasklet`).
//
// A weft::tasklet is a cheap, copyable handle with shared ownership of one tasklet. `tasklet t(f)` is
// Stackless' `tasklet(f).bind(f, ())`: alive and paused, not scheduled; `spawn(f)` is `tasklet(f)()`:
// bound and inserted at the tail of the runnable ring. The operations follow Stackless exactly
// (../shared/stackless/SEMANTICS.md §1, §3, §5); misuse throws std::logic_error with Stackless'
// message. A tasklet belongs to the thread that created it.
#pragma once

#include <compare>
#include <cstdint>
#include <exception>
#include <functional>
#include <source_location>
#include <string>
#include <type_traits>
#include <utility>

#include "weft/detail/tasklet_impl.hpp"

namespace weft {

/// Thrown inside a tasklet by kill() (Stackless' TaskletExit). Deliberately not derived from
/// std::exception, so that `catch (const std::exception&)` does not swallow a kill. Uncaught, it ends
/// the tasklet silently.
struct tasklet_exit {
  const char* what() const noexcept { return "TaskletExit"; }
};

class tasklet {
 public:
  /// An empty handle: all flags false; inserting or running it throws.
  tasklet() noexcept = default;

  /// Binds f (called with no arguments) to a new tasklet: alive and paused, not yet scheduled.
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, tasklet>>>
  explicit tasklet(F&& f) : impl_(detail::make_tasklet(std::forward<F>(f))) {
    detail::retain(impl_);
  }

  tasklet(const tasklet& o) noexcept : impl_(o.impl_) { detail::retain(impl_); }
  tasklet(tasklet&& o) noexcept : impl_(std::exchange(o.impl_, nullptr)) {}
  tasklet& operator=(tasklet o) noexcept {
    std::swap(impl_, o.impl_);
    return *this;
  }
  ~tasklet() { detail::release(impl_); }

  // Operations (SEMANTICS.md §1, §3). A tasklet handle is shared, like a channel: the operations do not
  // change the handle and are callable through a const one (a lambda's by-value capture needs no
  // `mutable`). Misuse throws std::logic_error with Stackless' message (SEMANTICS.md): a dead or empty
  // tasklet cannot be inserted, run or switched to (remove and kill of one do nothing), a blocked one
  // cannot be inserted, run or removed, the current one cannot be removed, and a tasklet of another
  // thread's runtime cannot be scheduled from this one. Called from a tasklet in ordered mode, each is
  // applied when the caller's segment commits; run, switch_to, kill and raise_exception are switch
  // points, insert, remove and set_name are not (README). A switch point takes the caller's
  // std::source_location as a defaulted last argument (never pass it yourself): WEFT_CHECK=replay
  // names the line where two runs of a segment ended at different switch points.

  /// Appends the tasklet at the tail of the runnable ring (no effect if scheduled or current).
  const tasklet& insert() const;
  /// Takes a runnable tasklet out of the ring (it becomes paused).
  const tasklet& remove() const;
  /// Rotates the ring so that this tasklet runs now; the caller keeps its place.
  void run(std::source_location where = std::source_location::current()) const;
  /// Like run(), but the caller leaves the ring (paused). Stackless' `switch`.
  void switch_to(std::source_location where = std::source_location::current()) const;
  /// Throws tasklet_exit inside the tasklet at once (rotating the ring to it; a blocked tasklet leaves
  /// its channel first). No effect on an empty handle or a dead tasklet. From a tasklet in ordered
  /// mode the caller's segment first waits for its turn (it makes an exception_ptr: README, Exceptions).
  void kill(std::source_location where = std::source_location::current()) const;
  /// Throws e inside the tasklet at once (rotating the ring to it). std::invalid_argument for a null e.
  void raise_exception(std::exception_ptr e, std::source_location where = std::source_location::current()) const;
  /// raise_exception(std::make_exception_ptr(e)): from a tasklet in ordered mode the caller's segment
  /// first waits for its turn (README, Exceptions).
  template <class E>
  void throw_(E e, std::source_location where = std::source_location::current()) const {
    raise_exception(std::make_exception_ptr(std::move(e)), where);
  }

  /// Stackless' flags (SEMANTICS.md §1, §2.1): alive until its function returned or threw; blocked while it
  /// waits in a channel; scheduled while in the runnable ring *or* blocked (so remove() of a scheduled
  /// tasklet may still throw "You cannot remove a blocked tasklet."); paused while alive in neither.
  bool alive() const noexcept;
  bool blocked() const noexcept;
  bool scheduled() const noexcept;
  bool paused() const noexcept;
  bool is_main() const noexcept;
  bool is_current() const noexcept;
  /// The name given with set_name, else "main" or "tasklet-<id>"; "" for an empty handle.
  std::string name() const;
  /// Names the tasklet (name() returns it). Throws std::logic_error for an empty handle.
  void set_name(std::string name) const;
  /// True unless the handle is empty.
  explicit operator bool() const noexcept { return impl_ != nullptr; }

  friend bool operator==(const tasklet& a, const tasklet& b) noexcept { return a.impl_ == b.impl_; }
  /// The tasklet's id: main is 0, the others 1, 2, ... in the order they were made (serial order at
  /// any worker count; per thread's runtime). Throws std::logic_error for an empty handle.
  std::uint64_t id() const;
  /// Ordered by id(), empty handles first (then by address: tasklets of two threads' runtimes may
  /// share an id): tasklets can be keys of std::map and std::set.
  friend std::strong_ordering operator<=>(const tasklet& a, const tasklet& b) noexcept {
    if (a.impl_ == b.impl_) return std::strong_ordering::equal;
    if (!a.impl_ || !b.impl_) return a.impl_ ? std::strong_ordering::greater : std::strong_ordering::less;
    if (auto c = detail::tasklet_order_key(a.impl_) <=> detail::tasklet_order_key(b.impl_); std::is_neq(c)) return c;
    return std::compare_three_way{}(a.impl_, b.impl_);
  }

  /// Internal: wraps a control block, taking a new reference.
  static tasklet from_impl(detail::tasklet_impl* t) noexcept {
    tasklet h;
    h.impl_ = t;
    detail::retain(t);
    return h;
  }
  detail::tasklet_impl* impl() const noexcept { return impl_; }

 private:
  detail::tasklet_impl* impl_ = nullptr;
};

/// Stackless' `tasklet(f)()`: binds f to a new tasklet and inserts it at the tail of the ring.
/// One switch point (a bind and an insert applied together): in ordered mode a loop of spawns ends
/// half as many segments, and main takes the commit lock once per spawn.
template <class F>
tasklet spawn(F&& f) {
  return tasklet::from_impl(detail::make_tasklet(std::forward<F>(f), true));
}

}  // namespace weft

/// Tasklets as keys of unordered containers (the hash of id()).
template <>
struct std::hash<weft::tasklet> {
  std::size_t operator()(const weft::tasklet& t) const noexcept {
    return t ? std::hash<std::uint64_t>{}(weft::detail::tasklet_order_key(t.impl())) : 0;
  }
};
