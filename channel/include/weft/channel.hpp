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
#pragma once

#include <cstddef>
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
void channel_set(channel_core* c, intent_kind kind, int value);
op_status channel_transfer(channel_core* c, int direction, void* slot, std::exception_ptr e, bool nonblocking);
/// receive() into `slot` (a std::optional<T>), or `closed` if the channel is closing and no sender waits.
op_status channel_receive_or_stop(channel_core* c, void* slot);
}  // namespace detail

template <class T>
class channel {
  static_assert(std::is_move_constructible_v<T>, "channel<T> needs a move-constructible T");

 public:
  enum class status { ok, would_block, closed };

  channel() : core_(detail::channel_create(&move_value)) {}
  channel(const channel& o) noexcept : core_(o.core_) { detail::channel_retain(core_); }
  channel& operator=(const channel& o) noexcept {
    detail::channel_retain(o.core_);
    detail::channel_release(core_);
    core_ = o.core_;
    return *this;
  }
  ~channel() { detail::channel_release(core_); }

  /// Sends v; blocks until a receiver takes it (see preference()).
  void send(T v) { detail::channel_transfer(core_, +1, &v, nullptr, false); }
  /// Receives a value; blocks until a sender provides one. Throws what send_exception sent.
  T receive() {
    std::optional<T> slot;
    detail::channel_transfer(core_, -1, &slot, nullptr, false);
    return std::move(*slot);
  }
  /// Like send, but the receiver's receive() throws e.
  void send_exception(std::exception_ptr e) {
    if (!e) throw std::invalid_argument("send_exception needs an exception");
    detail::channel_transfer(core_, +1, nullptr, std::move(e), false);
  }
  template <class E>
  void send_exception(E e) {
    send_exception(std::make_exception_ptr(std::move(e)));
  }
  /// Sends every element of r, as send() would; returns how many were sent.
  template <class Range>
  std::size_t send_sequence(Range&& r) {
    std::size_t n = 0;
    for (auto&& v : r) {
      send(T(std::forward<decltype(v)>(v)));
      ++n;
    }
    return n;
  }

  /// Completes at once if a receiver waits (moving from v); otherwise changes nothing and says why.
  status try_send(T& v) {
    return static_cast<status>(detail::channel_transfer(core_, +1, &v, nullptr, true));
  }
  /// Completes at once if a sender waits (into out); otherwise changes nothing and says why.
  status try_receive(T& out) {
    std::optional<T> slot;
    auto s = static_cast<status>(detail::channel_transfer(core_, -1, &slot, nullptr, true));
    if (s == status::ok) out = std::move(*slot);
    return s;
  }

  int balance() const noexcept { return detail::channel_read(core_).balance; }
  int preference() const noexcept { return detail::channel_read(core_).preference; }
  /// -1: a woken receiver runs at once; +1: a woken sender does; 0: neither. Else invalid_argument.
  void preference(int p) { detail::channel_set(core_, detail::intent_kind::channel_preference, p); }
  bool schedule_all() const noexcept { return detail::channel_read(core_).schedule_all; }
  void schedule_all(bool on) { detail::channel_set(core_, detail::intent_kind::channel_schedule_all, on); }

  /// Operations that would block now fail with channel_closed; waiting tasklets are not woken.
  void close() { detail::channel_set(core_, detail::intent_kind::channel_close, 0); }
  void open() { detail::channel_set(core_, detail::intent_kind::channel_open, 0); }
  bool closing() const noexcept { return detail::channel_read(core_).closing; }
  /// closing and nobody waiting.
  bool closed() const noexcept {
    auto v = detail::channel_read(core_);
    return v.closing && v.balance == 0;
  }

  /// Range-for receives until the channel is closing and a receive would block.
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(channel* c) : ch_(c) { advance(); }
    T& operator*() { return *value_; }
    iterator& operator++() {
      advance();
      return *this;
    }
    void operator++(int) { advance(); }
    friend bool operator==(const iterator& a, const iterator& b) noexcept { return a.ch_ == b.ch_; }

   private:
    // One intent, applied where it takes effect: stop if the channel is closing and no sender
    // waits, else receive (SEMANTICS.md §2.6). Reads no scheduler state of its own, so a range-for
    // over a channel never waits for the head in ordered mode.
    void advance() {
      value_.reset();
      std::optional<T> slot;
      if (detail::channel_receive_or_stop(ch_->core_, &slot) == detail::op_status::closed) {
        ch_ = nullptr;
        return;
      }
      value_.emplace(std::move(*slot));
    }
    channel* ch_ = nullptr;
    std::optional<T> value_;
  };
  iterator begin() { return iterator(this); }
  iterator end() { return iterator(); }

  friend bool operator==(const channel& a, const channel& b) noexcept { return a.core_ == b.core_; }

 private:
  static void move_value(void* dst, void* src) {
    static_cast<std::optional<T>*>(dst)->emplace(std::move(*static_cast<T*>(src)));
  }
  detail::channel_core* core_;
};

}  // namespace weft
