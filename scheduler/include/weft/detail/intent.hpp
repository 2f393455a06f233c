// weft/detail/intent.hpp — intents: what a switch point asks of the scheduler (private to weft).
//
// Every change that a switch point or a channel operation makes to scheduler state (the runnable
// ring, tasklet states, channel wait queues, balances, flags) is expressed as an `intent` and applied
// by one function, detail::apply (scheduler/src/apply.cpp). With one worker an intent is applied at
// once, by perform(); in the parallel modes (DESIGN.md §4) a segment records its ending intent and
// the commit applies it. Nothing else mutates that state.
#pragma once

#include <compare>
#include <cstdint>
#include <exception>
#include <source_location>
#include <string>

namespace weft::detail {

class tasklet_impl;
struct channel_core;

enum class intent_kind : std::uint8_t {
  run_main,            ///< weft::run()
  yield,               ///< weft::schedule()
  remove_self,         ///< weft::schedule_remove()
  insert,              ///< tasklet::insert()
  remove,              ///< tasklet::remove()
  run,                 ///< tasklet::run()
  switch_to,           ///< tasklet::switch_to()
  raise,               ///< tasklet::kill() / raise_exception(); `exception` is what to throw
  exit,                ///< the current tasklet's function ended; `exception` is what escaped, if anything
  channel_op,          ///< send (+1) / receive (-1) / send_exception / try_send / try_receive
  channel_close,
  channel_open,
  channel_preference,  ///< `value` is the new preference
  channel_schedule_all,///< `value` is 0 or 1
  bind,                ///< `target` was just made: registers it and gives it its id; `value` 1: and inserts it (spawn)
  set_name,            ///< `target`'s name becomes `text`
};

struct intent {
  intent_kind kind;
  tasklet_impl* target = nullptr;  ///< tasklet operations
  channel_core* channel = nullptr; ///< channel operations
  int value = 0;                   ///< direction (+1 send, -1 receive), preference or flag
  bool nonblocking = false;        ///< try_send / try_receive: never block, report instead
  bool kill = false;               ///< raise: this is a kill (no-op on dead tasklets)
  bool shutdown = false;           ///< raise: a shutdown kill (the victim runs just before main)
  bool stop_if_closed = false;     ///< receive: report `closed` instead of blocking or throwing on a closing channel
  void* slot = nullptr;            ///< sender: the T to move from; receiver: the std::optional<T> to fill
  std::exception_ptr exception{};
  /// set_name: the new name, moved from by apply. It is the caller's own string, which lives on the
  /// caller's stack until the intent is applied (a segment's ending intent is applied at its commit,
  /// before its tasklet resumes). A pointer, not a std::string: every channel operation builds an
  /// intent, and a string member costs each of them its construction and destruction.
  std::string* text = nullptr;
  /// The user's call that made the intent (the public function's std::source_location::current()
  /// default argument): WEFT_CHECK=replay names it when two runs of a segment end at different
  /// switch points. One pointer; nothing reads it otherwise.
  std::source_location where{};
};

enum class op_status : std::uint8_t { ok, would_block, closed };

/// Applies `in` on the calling thread's runtime, switches to whoever must run now, and when the
/// caller runs again throws the exception delivered to it there, if any.
op_status perform(intent& in);

// Channel state lives with the scheduler state it is committed with; channel/ reaches it only here.
struct channel_view {
  int balance;
  int preference;
  bool schedule_all;
  bool closing;
};
/// `move(dst, src)` move-constructs the value at `src` (a T) into `dst` (an empty std::optional<T>).
channel_core* channel_create(void (*move)(void* dst, void* src));
void channel_retain(channel_core* c) noexcept;
void channel_release(channel_core* c) noexcept;
channel_view channel_read(const channel_core* c) noexcept;
/// A channel's identity: (id of the tasklet that made it, its count of channels made so far).
struct channel_key {
  std::uint64_t creator;
  std::uint64_t serial;
  friend auto operator<=>(const channel_key&, const channel_key&) = default;
};
channel_key channel_identity(const channel_core* c) noexcept;
/// Makes the running code see committed scheduler state (DESIGN.md §4.4): in ordered mode a
/// speculative segment parks until its tasklet is the head, then goes on inevitable. No-op otherwise.
void observe_scheduler() noexcept;

}  // namespace weft::detail
