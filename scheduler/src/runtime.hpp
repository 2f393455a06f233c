// The per-thread runtime (private to scheduler/).
//
// State: the runnable ring (a circular list through tasklet_impl::next/prev whose head is the tasklet
// that runs), the main tasklet, the list of registered tasklets (for shutdown), the stack pool and
// counters; plus, in channel_core, each channel's FIFO of blocked tasklets. Invariants between switch
// points: the running tasklet is `current` and is the ring's `head`; a tasklet is in the ring iff its
// state is runnable, in exactly one channel queue iff blocked; `ring_size` counts the ring; every
// channel's balance equals (#blocked senders - #blocked receivers) in its queue.
//
// Only the owning thread touches a runtime, and only apply() changes ring, states and channel queues.
// The object is shared (refs) by the thread and by every control block it made, so that a handle that
// outlives the thread can still be destroyed safely.
#pragma once

#include <atomic>
#include <cstdio>
#include <exception>
#include <string_view>
#include <cstdint>
#include <memory>
#include <vector>

#include "weft/detail/context.hpp"
#include "weft/detail/intent.hpp"
#include "weft/gc.hpp"
#include "weft/scheduler.hpp"

namespace weft::detail {

struct channel_core {
  std::atomic<std::uint32_t> refs{1};  // handles + blocked tasklets
  tasklet_impl* head = nullptr;        // oldest blocked tasklet (circular list through next/prev)
  int balance = 0;
  int preference = -1;
  bool schedule_all = false;
  bool closing = false;
  runtime* owner = nullptr;            // the runtime that first operated on it
  void (*move)(void* dst, void* src) = nullptr;
  // Identity (channel_key): the id of the tasklet that made it and how many channels that tasklet
  // had made before. Both follow serial order, so maps keyed by channels iterate the same way at
  // any worker count; a channel made outside any weft runtime has creator ~0 and a process-wide count.
  std::uint64_t creator = 0, serial = 0;
};

struct ordered_state;  // scheduler/src/ordered.cpp
struct ordered_state_deleter {
  void operator()(ordered_state* o) const noexcept;
};

struct runtime {
  runtime();
  ~runtime();

  std::atomic<std::uint32_t> refs{1};        // the thread's holder + every control block made here
  std::atomic<std::size_t> control_blocks{0};  // control blocks not yet destroyed (main included)

  tasklet_impl* main = nullptr;
  tasklet_impl* current = nullptr;  // the running tasklet
  tasklet_impl* head = nullptr;     // ring head; nullptr when the ring is empty
  std::vector<tasklet_impl*> runners;  // tasklets waiting in run(), innermost last (SEMANTICS §1.6)
  std::size_t ring_size = 0;

  tasklet_impl* all_first = nullptr;  // registered tasklets, in order of first insertion
  tasklet_impl* all_last = nullptr;
  std::size_t alive = 0;  // tasklets bound here and not dead (main excluded)

  std::uint64_t next_id = 1;
  bool shutting_down = false;
  options config;

  /// Ordered mode's workers, segments and commit lock (nullptr in serial mode).
  std::unique_ptr<ordered_state, ordered_state_deleter> ordered;
  /// Segments run speculatively on the workers (ordered mode, until the one-way guard drains the run
  /// and it goes on in serial state on the main thread). Written under the commit lock; once false,
  /// only the main thread touches the runtime.
  std::atomic<bool> parallel{false};  // relaxed: the commit lock orders what depends on it
  bool is_parallel() const noexcept { return parallel.load(std::memory_order_relaxed); }

  stack_pool& stacks();
  std::unique_ptr<stack_pool> pool;  // made on first use
};

/// The calling thread's runtime, made on first use. Not inlined: a tasklet may one day resume on
/// another thread, and the compiler must not reuse a thread-local address computed before a switch.
runtime& this_runtime();

struct apply_result {
  tasklet_impl* next;  // who runs now (may be the caller)
  op_status status = op_status::ok;
};
/// The one function that changes scheduler and channel state (see weft/detail/intent.hpp).
apply_result apply(runtime& r, intent& in);

/// A dead tasklet nobody runs on any more: gives its stack back and drops the runtime's reference.
void retire(runtime& r, tasklet_impl* t) noexcept;

void release_runtime(runtime* r) noexcept;
/// Gives a freshly bound control block its owner and id (apply, intent_kind::bind).
void register_bound(runtime& r, tasklet_impl* t) noexcept;

/// Drops a channel reference at once, whatever runs on the thread (commit and abort paths).
void channel_release_now(channel_core* c) noexcept;
/// Undoes a rolled-back segment's channel_retain (never destroys).
inline void channel_undo_retain(channel_core* c) noexcept { c->refs.fetch_sub(1, std::memory_order_relaxed); }
/// Throws (and clears) t's pending exception.
[[noreturn]] void rethrow_pending_exception(tasklet_impl* t);
/// The tasklet whose code the calling thread runs.
tasklet_impl* running_tasklet(runtime& r) noexcept;
/// Serial state: makes `to` run instead of `from` (the running tasklet); returns when `from` runs again.
/// Inline: it is the hot half of every serial switch (pingpong pays it twice per round trip).
inline void serial_transfer(runtime& r, tasklet_impl* from, tasklet_impl* to) {
  r.current = to;
  if (!to->has_context) [[unlikely]]
    context_prepare(to, r.stacks().allocate());
  to->started = true;
  tasklet_impl* prev = context_switch(from, to);
  if (prev->state == tasklet_state::dead) [[unlikely]]
    retire(*from->owner, prev);
}

/// Program output (weft::print, commit_sink, a committed segment's buffer): written and flushed at
/// once, so that it reaches a file or pipe while the program runs and no exit path loses it.
void emit(std::FILE* stream, std::string_view text) noexcept;
/// Remembers that `e` escaped tasklet t (for the message of the terminate handler).
void note_escaped(const std::exception_ptr& e, const tasklet_impl* t);
/// Installs (once) the std::terminate handler that flushes output and names the tasklet an uncaught
/// exception came from.
void install_terminate_handler();

/// The registry of inserted tasklets, which holds the runtime's reference to each (shutdown walks it).
void enlist(runtime& r, tasklet_impl* t) noexcept;
void delist(runtime& r, tasklet_impl* t) noexcept;  // may destroy t

}  // namespace weft::detail
