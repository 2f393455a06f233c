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
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <exception>
#include <string>
#include <string_view>
#include <cstdint>
#include <memory>
#include <vector>
#include <typeinfo>

#include "weft/detail/context.hpp"
#include "weft/detail/epoch.hpp"
#include "weft/detail/intent.hpp"
#include "weft/gc.hpp"
#include "weft/scheduler.hpp"

namespace weft::detail {

// A channel's state below `owner` (queue, balance, flags, and the wait fields of the tasklets in its
// queue) is changed by one runtime at a time (SEMANTICS.md §5b: tasklets of several threads may share
// a channel). While only its `owner` (the first runtime to operate on it) uses it, the owner works
// unlocked, announcing each operation in its `busy_channel`; the first operation of another runtime
// makes it `shared` for good (threads.cpp: an asymmetric Dekker handshake with the owner), and from
// then on every runtime takes `lock`. channel_guard does all this.
//
// Layout: everything an operation on an unshared channel reads comes first, in 56 bytes; the lock
// (used once the channel is shared) and the identity after it.
struct channel_core {
  channel_core() = default;
  channel_core(const channel_core&) = delete;
  ~channel_core();  // drops the owner reference

  std::atomic<std::uint32_t> refs{1};  // handles + blocked tasklets + tasklets woken from it (queue_remove)
  int balance = 0;
  tasklet_impl* head = nullptr;        // oldest blocked tasklet (circular list through next/prev)
  // Serial state: an address on the stack of the tasklet that became `head` by blocking here, taken
  // when it blocked, a few hundred bytes below where its registers are saved. A hand-off prefetches
  // it as soon as this line arrives, before the head's control block (which says exactly where) has:
  // the page walk and the miss on a cold stack overlap the miss on the control block instead of
  // following it (apply.cpp). Only a hint: stale once that tasklet leaves (prefetching it is harmless).
  const void* resume_hint = nullptr;
  int preference = -1;
  bool schedule_all = false;
  bool closing = false;
  std::atomic<bool> shared{false};       // another runtime has operated on it: `lock` from now on
  std::atomic<runtime*> owner{nullptr};  // the runtime that first operated on it (holds a reference)
  void (*move)(void* dst, void* src) = nullptr;
  std::mutex lock;
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
  std::atomic<std::size_t> channels{0};        // channels it owns (threads.cpp) not yet destroyed

  tasklet_impl* main = nullptr;
  tasklet_impl* current = nullptr;  // the running tasklet
  tasklet_impl* head = nullptr;     // ring head; nullptr when the ring is empty
  // Ordered mode: where dispatch looks for the next tasklet to start, past the head (ordered.cpp,
  // pick). A hint, never relied on for correctness: in the ring or nullptr (the ring operations in
  // apply.cpp move it off a tasklet that leaves, and drop it when a tasklet that may start lands
  // before it or the head jumps).
  tasklet_impl* dispatch_hint = nullptr;
  std::vector<tasklet_impl*> runners;  // tasklets waiting in run(), innermost last (SEMANTICS §1.6)
  std::size_t ring_size = 0;

  tasklet_impl* all_first = nullptr;  // registered tasklets, in order of first insertion
  tasklet_impl* all_last = nullptr;
  std::size_t alive = 0;  // tasklets bound here and not dead (main excluded)

  std::uint64_t next_id = 1;
  std::atomic<bool> shutting_down{false};  // read by worker threads (ordered.cpp, pick)
  bool thread_ending = false;  // the shutdown is the thread's end: blocked tasklets leave ghosts
  /// Ghosts left in channels by this shutdown's kills, with the tasklet each stands for (holding a
  /// reference): settle_ghosts() keeps those someone else may still meet.
  std::vector<std::pair<tasklet_impl*, tasklet_impl*>> ghosts;
  options config;

  /// Ordered mode's workers, segments and commit lock (nullptr in serial mode).
  std::unique_ptr<ordered_state, ordered_state_deleter> ordered;
  std::uint32_t trace_id = 0;  // WEFT_TRACE: the runtime's number in the trace (0: not tracing)
  /// Segments run speculatively on the workers (ordered mode, until the guard drains the run and it
  /// goes on in serial state on the main thread, and again if a probe finds its segments long).
  /// Written under the commit lock; while false, only the main thread touches the runtime.
  std::atomic<bool> parallel{false};  // relaxed: the commit lock orders what depends on it
  bool is_parallel() const noexcept { return parallel.load(std::memory_order_relaxed); }
  /// Serial state after the guard's fallback for short segments: switch points of tasklets until the
  /// next probe of their length (ordered.cpp, ordered_probe); 0: no probe. Main thread only.
  std::uint32_t probe_countdown = 0;

  stack_pool& stacks();
  std::unique_ptr<stack_pool> pool;  // made on first use

  // Channels shared with other threads' runtimes (threads.cpp, SEMANTICS.md §5b).
  /// The unshared channel this runtime is operating on (the owner's half of channel_guard).
  std::atomic<channel_core*> busy_channel{nullptr};
  /// Set when another runtime has woken one of our tasklets: apply() takes the mail first.
  std::atomic<bool> has_mail{false};
  // Under the process-wide registry lock (threads.cpp):
  std::vector<tasklet_impl*> mail;  // tasklets woken by other runtimes, each with a reference
  std::condition_variable mail_arrived;
  bool waiting_for_mail = false;  // sleeping in wait_for_mail
  bool mail_deadlock = false;     // every other live runtime waits too: wait_for_mail gives up
  bool ended = false;             // the thread has ended: its blocked tasklets have no thread
};

/// The calling thread's runtime, made on first use. Not inlined: a tasklet may one day resume on
/// another thread, and the compiler must not reuse a thread-local address computed before a switch.
runtime& this_runtime();

/// The error for a tasklet or channel operation inside weft::atomically (perform, ordered_perform).
inline constexpr const char* scheduler_op_in_transaction =
    "a tasklet or channel operation (send, receive, try_send/try_receive, schedule, spawn, insert, run, "
    "kill, close, preference, set_name, ...) inside weft::atomically: these act on the scheduler, "
    "which a transaction cannot roll back; move it out of the transaction";
/// The error for one in the destructor of a weft::shared object (perform, ordered_perform).
inline constexpr const char* scheduler_op_in_shared_destructor =
    "a tasklet or channel operation (send, receive, try_send/try_receive, schedule, spawn, insert, run, "
    "kill, close, preference, set_name, ...) in the destructor of an object held by weft::shared: "
    "it runs where the last handle goes, in ordered mode at a segment's commit, outside any tasklet; "
    "act from the code that drops the last handle instead";
/// Drops the function of a tasklet killed before it ever ran (its captures' destructors run here,
/// in ordered mode at a commit or an abort): a tasklet or channel operation in them is refused, as in
/// destroy().
void drop_unrun_function(tasklet_impl* t) noexcept;
/// The error for one in the destructor of a capture of a tasklet destroyed with its last handle.
inline constexpr const char* scheduler_op_in_dropped_tasklet =
    "a tasklet or channel operation (send, receive, try_send/try_receive, schedule, spawn, insert, run, "
    "kill, close, preference, set_name, ...) in a destructor run when a tasklet's last handle goes (the "
    "captures of a function that never ran, or of a tasklet killed before it ran): in ordered mode it "
    "runs at a segment's commit, outside any tasklet; act from the code that drops the handle or kills "
    "the tasklet instead";
/// Throws the error for where this thread is (detail::scheduler_ops_refused): in a shared object's
/// destructor or a dropped tasklet's captures, after writing it to stderr (the destructor it leaves
/// is usually noexcept, and std::terminate would then say only "without an active exception");
/// else in tvar::view.
[[noreturn]] void refuse_scheduler_op();
/// The error for one inside tvar::view's function (perform, ordered_perform).
inline constexpr const char* scheduler_op_in_view =
    "a tasklet or channel operation (send, receive, try_send/try_receive, schedule, spawn, insert, run, "
    "kill, close, preference, set_name, ...) inside tvar::view: the viewed value may be replaced and "
    "freed meanwhile; copy what you need and act after view returns";

struct apply_result {
  tasklet_impl* next;  // who runs now (may be the caller)
  op_status status = op_status::ok;
};
/// The one function that changes scheduler and channel state (see weft/detail/intent.hpp).
apply_result apply(runtime& r, intent& in);
/// apply() for an intent of kind channel_op (the hot path of every send and receive: no dispatch).
apply_result apply_channel(runtime& r, intent& in);

/// A dead tasklet nobody runs on any more: gives its stack back and drops the runtime's reference.
void retire(runtime& r, tasklet_impl* t) noexcept;

void release_runtime(runtime* r) noexcept;
/// Gives a freshly bound control block its owner and id (apply, intent_kind::bind).
void register_bound(runtime& r, tasklet_impl* t) noexcept;

// --- channels shared by runtimes (threads.cpp) ---------------------------------------------------
/// Exclusive access to a channel's state for runtime r (see channel_core). Not reentrant: one at a
/// time per runtime. unlock() early before anything that may wait.
class channel_guard {
 public:
  /// Inline: the owner's unshared path is a store, a compiler barrier and a load (ping-pong pays it
  /// twice per round trip); threads.cpp has the rest.
  channel_guard(runtime& r, channel_core* c) : r_(&r), c_(c) {
    if (c->owner.load(std::memory_order_relaxed) == &r) [[likely]] {  // only r itself stores &r there
      // Release, not relaxed: a sharer waiting for this runtime to leave another channel may read
      // this store, not the release of nullptr that ended that operation (make_shared).
      r.busy_channel.store(c, std::memory_order_release);
      asymmetric_fence_light();  // pairs with make_shared's asymmetric_fence_heavy
      if (!c->shared.load(std::memory_order_relaxed)) [[likely]] {
        how_ = how::busy;
        return;
      }
      r.busy_channel.store(nullptr, std::memory_order_release);
    }
    how_ = enter_slow(r, c);
  }
  ~channel_guard() { unlock(); }
  channel_guard(const channel_guard&) = delete;
  channel_guard& operator=(const channel_guard&) = delete;
  void unlock() noexcept {
    if (how_ == how::busy) [[likely]]
      r_->busy_channel.store(nullptr, std::memory_order_release);
    else if (how_ == how::locked)
      c_->lock.unlock();
    how_ = how::none;
  }

 private:
  enum class how : std::uint8_t { none, busy, locked };
  // The first operation on c, or c is (becoming) shared. Static, so that the guard itself never
  // escapes to memory: its fields stay in registers and a second unlock() folds away.
  static how enter_slow(runtime& r, channel_core* c);
  runtime* r_;
  channel_core* c_;
  how how_ = how::none;
};

/// Counts a thread's runtime in (at creation) and out (when its thread ends: ended, and if every other
/// live runtime waits for mail, the last to wait is told that it is deadlocked).
void runtime_registered(runtime& r);
void runtime_ended(runtime& r) noexcept;
/// While alive, threads made on this thread are weft's own (ordered mode's workers): they are not
/// counted as threads that may use weft (threads.cpp).
struct internal_thread_scope {
  internal_thread_scope() noexcept;
  ~internal_thread_scope();
  internal_thread_scope(const internal_thread_scope&) = delete;
  internal_thread_scope& operator=(const internal_thread_scope&) = delete;
};
/// The calling thread's runtime (its own, or, on an ordered-mode worker, the one it runs for), or
/// nullptr if it has none; makes none.
runtime* thread_runtime() noexcept;
/// Another thread's runtime is alive, or a thread the program made (not the caller) has not used weft
/// yet (SEMANTICS.md §5b: a main with nothing to run then waits; retry() with neither is an error).
bool other_runtimes_alive() noexcept;
/// Under the registry lock: r (this thread's runtime) has mail, or other_runtimes_alive(). The test
/// before a §4.1 deadlock error while other threads exist: mail posted since the caller last took
/// its mail wakes one of r's tasklets even when its sender's thread has ended since.
bool may_be_woken(const runtime& r) noexcept;
/// Under c's guard, by the runtime of the partner's partner: p (blocked in c, of another runtime) has
/// been matched and taken out of c's queue; sends it to its runtime, which makes it runnable when it
/// next applies an intent. Throws std::runtime_error("tasklet has no thread") if p's thread has ended.
void check_partner_has_thread(const tasklet_impl* p);
/// A tasklet bound and never inserted whose runtime has ended (weft::shutdown(), or its thread's
/// end): nothing can run it any more, and it counts as dead, as in Stackless (its flags, kill() a
/// no-op; newcomer round 14). Its function goes with its last handle. Takes the registry lock only
/// for a bound, never-inserted tasklet.
bool orphaned(const tasklet_impl* t) noexcept;
/// r's thread has ended, or weft::shutdown() ended r (under the registry lock).
bool runtime_has_ended(const runtime& r) noexcept;
inline bool dead_or_orphaned(const tasklet_impl* t) noexcept {
  return t->state == tasklet_state::dead || orphaned(t);
}
void post_wake(tasklet_impl* p);
/// Makes the tasklets other runtimes woke runnable (appended to the ring, in arrival order).
void take_mail(runtime& r);
/// Sleeps until another runtime wakes one of ours (then takes the mail and returns `woken`), or until
/// it is a deadlock: every live runtime waits (`deadlock`: other runtimes were alive, SEMANTICS.md
/// §5b), or no other runtime or unstarted thread exists at all (`alone`, without waiting). While the
/// process exits (process_exit_begins) a thread other than the exiting one never gives up: it sleeps
/// until the process ends.
enum class mail_wait { woken, deadlock, alone };
mail_wait wait_for_mail(runtime& r);
/// std::exit was called on this thread, or the process's first thread is destroying its thread-local
/// objects (main returned): the other threads' runtimes must not see the exiting thread's runtime
/// end as a deadlock (a thread waiting for mail got weft::deadlock_error and ended the process with
/// std::terminate, status 134, while std::exit(4) was running: newcomer round 18).
void process_exit_begins() noexcept;
enum class channel_exit { woken, unlinked, stayed };
/// t (of r) is blocked on a channel. Under the channel's guard: if a tasklet of another runtime
/// already matched t (§5b; the matcher unlinked it and posted the wake-up), completes t's side of
/// that wake-up — t becomes paused and is appended to r's ring — and returns `woken`. Otherwise, if
/// `unlink`, takes t out of the queue (t becomes paused, not appended; the caller decides what it
/// runs next) and returns `unlinked`; else changes nothing and returns `stayed`.
channel_exit leave_channel(runtime& r, tasklet_impl* t, bool unlink, tasklet_impl* ghost = nullptr);
/// After a thread's shutdown killed its blocked tasklets: removes the ghosts nobody can meet (their
/// channel has no other reference, or the tasklet refused to die and still waits itself) and keeps
/// the others for good (SEMANTICS.md §5b: "tasklet has no thread").
void settle_ghosts(runtime& r) noexcept;

/// Destroys a channel whose last reference went (channel_release_now).
void channel_destroy(channel_core* c) noexcept;
/// Takes a channel reference at once, never logged: apply() (committed state, e.g. a blocked tasklet's
/// reference) and code outside any segment.
inline void channel_retain_now(channel_core* c) noexcept { c->refs.fetch_add(1, std::memory_order_relaxed); }
/// Drops a channel reference at once, whatever runs on the thread (apply, commit and abort paths).
inline void channel_release_now(channel_core* c) noexcept {
  // acq_rel: the last release sees all writes made through other references before deleting.
  if (c && c->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) [[unlikely]]
    channel_destroy(c);
}
/// Drops a reference that is known not to be the last (a rolled-back segment's channel_retain; a
/// blocked tasklet's while the caller holds a handle): never destroys.
inline void channel_release_not_last(channel_core* c) noexcept { c->refs.fetch_sub(1, std::memory_order_relaxed); }
/// Drops the reference a tasklet that is not blocked kept to the channel of its last wait (see
/// queue_remove in apply.cpp): at its end, or when its control block goes.
inline void drop_kept_channel(tasklet_impl* t) noexcept {
  if (t->state != tasklet_state::blocked && t->channel) channel_release_now(std::exchange(t->channel, nullptr));
}
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
  tasklet_impl* prev = context_switch_inline(from, to);
  if (prev->state == tasklet_state::dead) [[unlikely]]
    retire(*from->owner, prev);
}

/// Program output (weft::print, commit_sink, a committed segment's buffer): written and flushed at
/// once, so that it reaches a file or pipe while the program runs and no exit path loses it.
void emit(std::FILE* stream, std::string_view text) noexcept;
/// How a tasklet is named in output and reports: its name, else "main" for the main tasklet, else
/// "tasklet-<id>" (the answer of tasklet::name()).
std::string display_name(const tasklet_impl& t);
/// Remembers that `e` escaped tasklet t (for the message of the terminate handler).
void note_escaped(const std::exception_ptr& e, const tasklet_impl* t);
/// Records that e (a kill or raise) is about to be thrown into t at a switch point: if it leaves a
/// destructor there (during an unwinding or not), the terminate handler says what happened.
void note_delivered(const std::exception_ptr& e, const tasklet_impl* t) noexcept;
/// The same for a kill thrown as the new tasklet_exit `object` (rethrow_pending_exception).
void note_delivered(const void* object, const std::type_info& type, const tasklet_impl* t) noexcept;
/// Installs (once) the std::terminate handler that flushes output and names the tasklet an uncaught
/// exception came from.
void install_terminate_handler();

/// The registry of inserted tasklets, which holds the runtime's reference to each (shutdown walks it).
void enlist_slow(runtime& r, tasklet_impl* t) noexcept;
/// Registers t (on its first insertion into the ring); a test and nothing more for the others.
inline void enlist(runtime& r, tasklet_impl* t) noexcept {
  if (!t->registered && !t->is_main) [[unlikely]]
    enlist_slow(r, t);
}
void delist(runtime& r, tasklet_impl* t) noexcept;  // may destroy t

}  // namespace weft::detail
