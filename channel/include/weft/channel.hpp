// weft/channel.hpp — channel<T>: Stackless channels (SEMANTICS.md §2).
//
// A channel is a cheap, copyable handle; copies share one channel. It has no buffer: a send
// completes when a receiver takes the value, and whoever comes first waits in the channel's FIFO
// queue, out of the runnable ring. `balance()` is (#waiting senders - #waiting receivers).
// `preference` decides who runs when a partner is found: -1 (default) the receiver, +1 the sender,
// 0 neither (the woken tasklet goes to the tail). `schedule_all` makes both go behind everyone.
//
// Every operation is an intent applied by the scheduler (weft/detail/intent.hpp): values move at the
// moment the operation takes effect, straight from the sender's frame into the receiver's.
//
// Threads (SEMANTICS.md §5b). Tasklets of several threads (each thread that uses weft has its own
// runtime) may share a channel; operations are then thread-safe. A partner of another thread is
// woken in its own thread — appended to its thread's ring when that thread next reaches a switch
// point (in ordered mode: at its next commit) — and the caller goes on as if it had been appended
// (preference and schedule_all apply only to partners of the caller's thread). FIFO order and
// balances hold across threads. A thread whose main tasklet blocks with nothing else runnable sleeps
// until another thread wakes one of its tasklets, while another thread is alive that uses weft or
// has not yet (any thread the program started, from its creation to its end; weft counts them at
// pthread_create); when every such thread waits, the last one to start waiting gets the deadlock
// error. Matching a
// tasklet whose thread has ended throws std::runtime_error("tasklet has no thread") and changes
// nothing. Cost: a channel used by one thread only takes no lock (a store and a load per
// operation); from the first operation of a second thread on, it takes a mutex.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <exception>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <utility>

#include "weft/detail/intent.hpp"
#include "weft/errors.hpp"
#include "weft/scheduler.hpp"

namespace weft {

namespace detail {
/// Validates and applies a preference change (throws std::invalid_argument outside -1..1).
void channel_set(channel_core* c, intent_kind kind, int value, const std::source_location& where);
op_status channel_transfer(channel_core* c, int direction, void* slot, std::exception_ptr e, bool nonblocking,
                           const std::source_location& where);
/// The same for a value (no exception: send/receive, try_send/try_receive), without an
/// exception_ptr to build, move and destroy on every operation. Inline, so that the intent lives in
/// the caller's frame: a blocked tasklet's stack holds one frame fewer between its code and the
/// switch, one return and one cache line fewer to bring back when it resumes (with thousands of
/// tasklets their stacks are cold: sieve of 2,000 primes ran ~12% faster in a build where the
/// compiler inlined it).
inline op_status channel_transfer_value(channel_core* c, int direction, void* slot, bool nonblocking,
                                        const std::source_location& where) {
  intent in{.kind = intent_kind::channel_op, .channel = c, .value = direction, .nonblocking = nonblocking, .slot = slot,
            .where = where};
  return perform(in);
}
/// receive() into `slot` (a std::optional<T>), or `closed` if the channel is closing and no sender waits.
inline op_status channel_receive_or_stop(channel_core* c, void* slot, const std::source_location& where) {
  intent in{.kind = intent_kind::channel_op, .channel = c, .value = -1, .stop_if_closed = true, .slot = slot,
            .where = where};
  return perform(in);
}
}  // namespace detail

/// A channel's identity (channel<T>::id()): the id of the tasklet that made it and that tasklet's
/// count of channels made, itself included. Totally ordered; the same at any worker count.
using channel_id = detail::channel_key;

template <class T>
class channel {
 public:
  enum class status { ok, would_block, closed };

  /// A new channel (Stackless' `channel()`).
  channel() : core_(detail::channel_create(&move_value)) {}
  /// An empty handle (Stackless' `None` where a channel is expected): no channel, nothing allocated.
  /// Every operation on it throws std::logic_error; it compares equal only to other empty handles.
  channel(std::nullptr_t) noexcept : core_(nullptr) {}
  channel(const channel& o) noexcept : core_(o.core_) {
    if (core_) detail::channel_retain(core_);
  }
  /// Takes o's channel; o becomes empty.
  channel(channel&& o) noexcept : core_(std::exchange(o.core_, nullptr)) {}
  channel& operator=(const channel& o) noexcept {
    if (o.core_) detail::channel_retain(o.core_);
    if (core_) detail::channel_release(core_);
    core_ = o.core_;
    return *this;
  }
  channel& operator=(channel&& o) noexcept {
    if (this != &o) {
      if (core_) detail::channel_release(core_);
      core_ = std::exchange(o.core_, nullptr);
    }
    return *this;
  }
  ~channel() {
    if (core_) detail::channel_release(core_);
  }

  // The operations are const: a channel<T> is a handle (like Go's `chan T`), and sending through a
  // const handle changes the shared channel, not the handle. T may be incomplete where a channel<T>
  // is declared (`struct msg { weft::channel<msg> reply; };`); it must be complete and movable where
  // values are sent or received.

  /// Sends v; blocks until a receiver takes it (see preference()). Throws deadlock_error (§4),
  /// channel_closed (§2.6), std::runtime_error("tasklet has no thread") (§5b).
  //
  // Every operation that is a switch point takes the caller's std::source_location as a defaulted last
  // argument (never pass it yourself): WEFT_CHECK=replay names the line where two runs of a segment
  // ended at different switch points.
  void send(T v, std::source_location where = std::source_location::current()) const { transfer(+1, &v, false, where); }
  /// Receives a value; blocks until a sender provides one. Throws what send_exception sent.
  T receive(std::source_location where = std::source_location::current()) const {
    std::optional<T> slot;
    transfer(-1, &slot, false, where);
    return std::move(*slot);
  }
  /// Like send, but the receiver's receive() throws e.
  void send_exception(std::exception_ptr e, std::source_location where = std::source_location::current()) const {
    if (!e) throw std::invalid_argument("send_exception needs an exception");
    transfer(+1, nullptr, std::move(e), false, where);
  }
  /// send_exception(std::make_exception_ptr(e)): from a tasklet in ordered mode the caller's segment
  /// first waits for its turn (README, Exceptions).
  template <class E>
  void send_exception(E e, std::source_location where = std::source_location::current()) const {
    send_exception(std::make_exception_ptr(std::move(e)), where);
  }
  /// Sends every element of r, as send() would; returns how many were sent.
  template <class Range>
  std::size_t send_sequence(Range&& r, std::source_location where = std::source_location::current()) const {
    std::size_t n = 0;
    for (auto&& v : r) {
      send(T(std::forward<decltype(v)>(v)), where);
      ++n;
    }
    return n;
  }

  /// Completes at once if a receiver waits (moving from v); otherwise changes nothing and says why.
  status try_send(T& v, std::source_location where = std::source_location::current()) const {
    return static_cast<status>(transfer(+1, &v, true, where));
  }
  /// Completes at once if a sender waits (into out); otherwise changes nothing and says why.
  status try_receive(T& out, std::source_location where = std::source_location::current()) const {
    std::optional<T> slot;
    auto s = static_cast<status>(transfer(-1, &slot, true, where));
    if (s == status::ok) out = std::move(*slot);
    return s;
  }

  int balance() const { return detail::channel_read(core()).balance; }
  int preference() const { return detail::channel_read(core()).preference; }
  /// -1: a woken receiver runs at once; +1: a woken sender does; 0: neither. Else invalid_argument.
  void preference(int p, std::source_location where = std::source_location::current()) const {
    detail::channel_set(core(), detail::intent_kind::channel_preference, p, where);
  }
  bool schedule_all() const { return detail::channel_read(core()).schedule_all; }
  void schedule_all(bool on, std::source_location where = std::source_location::current()) const {
    detail::channel_set(core(), detail::intent_kind::channel_schedule_all, on, where);
  }

  /// Operations that would block now fail with channel_closed; waiting tasklets are not woken.
  void close(std::source_location where = std::source_location::current()) const {
    detail::channel_set(core(), detail::intent_kind::channel_close, 0, where);
  }
  void open(std::source_location where = std::source_location::current()) const {
    detail::channel_set(core(), detail::intent_kind::channel_open, 0, where);
  }
  bool closing() const { return detail::channel_read(core()).closing; }
  /// closing and nobody waiting.
  bool closed() const {
    auto v = detail::channel_read(core());
    return v.closing && v.balance == 0;
  }

  /// Range-for receives until the channel is closing and a receive would block.
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    iterator(detail::channel_core* c, const std::source_location& where) : core_(c), where_(where) { advance(); }
    T& operator*() { return *value_; }
    iterator& operator++() {
      advance();
      return *this;
    }
    void operator++(int) { advance(); }
    friend bool operator==(const iterator& a, const iterator& b) noexcept { return a.core_ == b.core_; }

   private:
    // One intent, applied where it takes effect: stop if the channel is closing and no sender
    // waits, else receive (SEMANTICS.md §2.6). Reads no scheduler state of its own, so a range-for
    // over a channel never waits for the head in ordered mode.
    void advance() {
      value_.reset();
      std::optional<T> slot;
      if (detail::channel_receive_or_stop(core_, &slot, where_) == detail::op_status::closed) {
        core_ = nullptr;
        return;
      }
      value_.emplace(std::move(*slot));
    }
    detail::channel_core* core_ = nullptr;  // the range-for's channel handle keeps it alive
    std::source_location where_{};          // the range-for (its implicit call of begin())
    std::optional<T> value_;
  };
  iterator begin(std::source_location where = std::source_location::current()) const { return iterator(core(), where); }
  iterator end() const { return iterator(); }

  /// False for an empty handle.
  explicit operator bool() const noexcept { return core_ != nullptr; }
  /// The channel's identity: the id of the tasklet that made it (main, or a thread with no weft
  /// runtime yet: 0) and how many channels that tasklet had made, itself included. It follows serial
  /// order, so it is the same at any worker count and in every run of a deterministic program.
  /// Throws std::logic_error for an empty handle.
  channel_id id() const { return detail::channel_identity(core()); }
  /// Handles are equal when they refer to the same channel (or are both empty).
  friend bool operator==(const channel& a, const channel& b) noexcept { return a.core_ == b.core_; }
  friend bool operator==(const channel& a, std::nullptr_t) noexcept { return a.core_ == nullptr; }
  /// Ordered by id(), empty handles first: channels can be keys of std::map and std::set, and such
  /// maps iterate in the same order at any worker count. (Channels made by different threads'
  /// runtimes may share an id: those are ordered by address.)
  friend std::strong_ordering operator<=>(const channel& a, const channel& b) noexcept {
    if (a.core_ == b.core_) return std::strong_ordering::equal;
    if (!a.core_ || !b.core_) return a.core_ ? std::strong_ordering::greater : std::strong_ordering::less;
    if (auto c = detail::channel_identity(a.core_) <=> detail::channel_identity(b.core_); std::is_neq(c)) return c;
    return std::compare_three_way{}(a.core_, b.core_);
  }

 private:
  static void move_value(void* dst, void* src) {
    static_assert(std::is_move_constructible_v<T>, "channel<T> needs a move-constructible T");
    static_cast<std::optional<T>*>(dst)->emplace(std::move(*static_cast<T*>(src)));
  }
  detail::channel_core* core() const {
    if (!core_) throw std::logic_error("operation on an empty channel handle (made from nullptr, or moved from)");
    return core_;
  }
  detail::op_status transfer(int direction, void* slot, std::exception_ptr e, bool nonblocking,
                             const std::source_location& where) const {
    static_assert(std::is_move_constructible_v<T>, "channel<T> needs a move-constructible T");
    return detail::channel_transfer(core(), direction, slot, std::move(e), nonblocking, where);
  }
  detail::op_status transfer(int direction, void* slot, bool nonblocking, const std::source_location& where) const {
    static_assert(std::is_move_constructible_v<T>, "channel<T> needs a move-constructible T");
    return detail::channel_transfer_value(core(), direction, slot, nonblocking, where);
  }
  detail::channel_core* core_;
};

}  // namespace weft

/// fmt::format("{}", ch.id()) and weft::print: "creator.serial", e.g. "3.2" for the second channel
/// tasklet 3 made. No format specification is accepted.
template <>
struct fmt::formatter<weft::channel_id> {
  constexpr auto parse(fmt::format_parse_context& ctx) { return ctx.begin(); }
  template <class Context>
  auto format(const weft::channel_id& id, Context& ctx) const {
    return fmt::format_to(ctx.out(), "{}.{}", id.creator, id.serial);
  }
};

/// Channels as keys of unordered containers: the hash of id(), so that iteration order does not
/// depend on addresses (the same in every run and at any worker count).
template <class T>
struct std::hash<weft::channel<T>> {
  std::size_t operator()(const weft::channel<T>& c) const noexcept {
    if (!c) return 0;
    const auto k = c.id();
    return std::hash<std::uint64_t>{}(k.creator * 0x9E3779B97F4A7C15ULL ^ k.serial);
  }
};
