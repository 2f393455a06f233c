// apply(): the one function that changes scheduler state — the runnable ring, tasklet states and
// channel wait queues — for every intent (weft/detail/intent.hpp). The rules are Stackless 3.7.5's,
// as observed and written down in ../shared/stackless/SEMANTICS.md; section numbers below refer to it.
//
// apply() never switches context: it decides who runs next and returns it. With one worker perform()
// switches at once; a parallel commit will call apply() on committed state instead. An intent that
// is an error (Stackless raises) throws before it changes anything.
//
// Ring vocabulary: the ring is circular with the running tasklet at `head`; "append" inserts just
// before head, i.e. at the tail; "rotate to T" sets head = T without relinking, so the cyclic order
// (and the caller's place in it) is unchanged.
#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "ordered.hpp"
#include "runtime.hpp"

namespace weft::detail {

namespace msg {
constexpr const char* unbound = "You cannot run an unbound(dead) tasklet";
constexpr const char* blocked = "You cannot run a blocked tasklet";
constexpr const char* remove_current = "The current tasklet cannot be removed.";
constexpr const char* remove_blocked = "You cannot remove a blocked tasklet.";
constexpr const char* throw_dead = "You cannot throw to a dead tasklet";
constexpr const char* other_thread = "can't switch to a different thread.";
// A tasklet whose thread has ended (round 14, observed on Stackless 3.7.5: insert, then run/switch).
constexpr const char* no_thread_insert = "Target thread isn't initialized";
constexpr const char* no_thread = "tasklet has no thread";
constexpr const char* deadlock = "Deadlock: the last runnable tasklet cannot be blocked.";
constexpr const char* main_receiving = "the main tasklet is receiving without a sender available.";
constexpr const char* main_sending = "the main tasklet is sending without a receiver available.";
}  // namespace msg

namespace {

[[noreturn]] void misuse(const char* what) { throw std::logic_error(what); }

// --- ring ---------------------------------------------------------------------------------------
void link_before(tasklet_impl* pos, tasklet_impl* t) noexcept {
  t->next = pos;
  t->prev = pos->prev;
  pos->prev->next = t;
  pos->prev = t;
}

void unlink(tasklet_impl* t) noexcept {
  t->prev->next = t->next;
  t->next->prev = t->prev;
  t->next = t->prev = nullptr;
}

// t no longer waits in run() (it leaves the ring for elsewhere): off the stack of runners.
void stop_waiting_in_run(runtime& r, tasklet_impl* t) noexcept {
  if (!t->in_run) return;
  t->in_run = false;
  std::erase(r.runners, t);
}

// Appends t at the tail of the ring (just before the head) and makes it runnable.
inline __attribute__((always_inline)) void ring_append(runtime& r, tasklet_impl* t) noexcept {
  if (r.head) {
    link_before(r.head, t);
  } else {
    t->next = t->prev = t;
    r.head = t;
  }
  ++r.ring_size;
  t->state = tasklet_state::runnable;
  enlist(r, t);
}

// Puts t right after `pos` (which is in the ring).
void ring_insert_after(runtime& r, tasklet_impl* pos, tasklet_impl* t) noexcept {
  r.dispatch_hint = nullptr;  // t may land between the head and the hint
  link_before(pos->next, t);
  ++r.ring_size;
  t->state = tasklet_state::runnable;
  enlist(r, t);
}

// Takes t out of the ring; if it was the head, its successor becomes the head. The caller sets the
// new state.
void ring_unlink(runtime& r, tasklet_impl* t) noexcept {
  if (r.dispatch_hint == t) r.dispatch_hint = t->next != t ? t->next : nullptr;
  if (t->next == t) {
    r.head = nullptr;
    t->next = t->prev = nullptr;
  } else {
    if (r.head == t) r.head = t->next;
    unlink(t);
  }
  --r.ring_size;
}

// The head moves on to the next tasklet of the ring (the cyclic order is unchanged).
void ring_advance(runtime& r) noexcept {
  if (r.dispatch_hint == r.head) r.dispatch_hint = r.head->next;
  r.head = r.head->next;
}

// "Rotate to t": the tasklets from the old head up to t are now at the tail, and the dispatch hint
// may be among them; in ordered mode, so may segments that started before main (ordered_rotating).
void ring_rotate_to(runtime& r, tasklet_impl* t) noexcept {
  r.dispatch_hint = nullptr;
  if (r.is_parallel() && r.head && r.head != t) ordered_rotating(r, r.head, t);
  r.head = t;
}

// --- channel queues (under the channel's guard, threads.cpp) ------------------------------------------
// t's reference to c: taken here unless t kept one from its last wait in c (see queue_remove).
void queue_append(channel_core* c, tasklet_impl* t, int direction, bool has_reference) noexcept {
  if (c->head) {
    link_before(c->head, t);
  } else {
    t->next = t->prev = t;
    c->head = t;
  }
  c->balance += direction;
  t->direction = static_cast<std::int8_t>(direction);
  t->channel = c;
  t->state = tasklet_state::blocked;
  // A blocked tasklet keeps its channel alive (committed state: never logged).
  if (!has_reference) channel_retain_now(c);
}

// Takes t out of its channel's queue and balance; its own fields are left to its runtime.
void queue_unlink(tasklet_impl* t) noexcept {
  channel_core* c = t->channel;
  if (t->next == t) {
    c->head = nullptr;
    t->next = t->prev = nullptr;
  } else {
    if (c->head == t) c->head = t->next;
    unlink(t);
  }
  c->balance -= t->direction;
}

// Puts g in t's place in its channel's queue (under the channel's guard): same position, direction
// and balance; g takes over t's reference to the channel.
void queue_replace(tasklet_impl* t, tasklet_impl* g) noexcept {
  channel_core* c = t->channel;
  g->direction = t->direction;
  g->channel = c;
  g->state = tasklet_state::blocked;
  if (t->next == t) {
    g->next = g->prev = g;
  } else {
    g->next = t->next;
    g->prev = t->prev;
    t->prev->next = g;
    t->next->prev = g;
  }
  if (c->head == t) c->head = g;
  t->next = t->prev = nullptr;
}

// Takes the blocked tasklet t out of its channel's queue (under the channel's guard) for a hand-off;
// t becomes paused and keeps its reference to the channel in t->channel. A tasklet that waits in a
// channel again and again (a sieve's filter, a server's request loop) so pays no reference count
// change per wait: the locked decrement on the waker's side and the increment when it blocks again
// cost 8% of a sieve of 2,000 primes and of hackysack K=1,000 (locked read-modify-writes hold back
// the loads that follow them). The reference goes when t waits in another channel, dies
// (drop_kept_channel) or its control block is destroyed.
void queue_remove(tasklet_impl* t) noexcept {
  queue_unlink(t);
  t->slot = nullptr;
  t->state = tasklet_state::paused;
}

// Takes t (of r, blocked) out of its channel for a kill, a raise or a deadlock error; false if a
// tasklet of another runtime had matched it meanwhile (it is then runnable, its wake-up taken).
bool unblock(runtime& r, tasklet_impl* t) { return leave_channel(r, t, true) == channel_exit::unlinked; }

// A channel's stand-in for a tasklet killed by its thread's end (SEMANTICS.md §5b).
class ghost_tasklet final : public tasklet_impl {
 public:
  void invoke() override {}
  void drop_function() noexcept override {}
};

// The end of a thread kills its blocked tasklets so that their stacks unwind (§6), but in Stackless
// such a tasklet stays in its channel's queue for good, and an operation of another thread that
// would match it throws "tasklet has no thread" (§5b; observed: the channel's balance stays -1).
// So a ghost takes its place there; settle_ghosts() drops the ones nobody can meet.
void unblock_leaving_ghost(runtime& r, tasklet_impl* t) {
  auto* g = new ghost_tasklet;
  g->ghost = true;
  g->owner = &r;
  if (leave_channel(r, t, true, g) != channel_exit::unlinked) {
    delete g;  // another thread matched t first: no place to keep
    return;
  }
  retain(t);
  r.ghosts.emplace_back(g, t);
}

// Who runs when the ring may have become empty: the head; else the innermost run() returns (§1.6:
// the calls nest, from any tasklet); else main resumes by itself (§1.5, §1.9) — or, if main is
// blocked on a channel, with a deadlock error (§4.2). While another thread's runtime lives, a
// blocked main first waits for it to wake one of ours (§5b) — except when the ring empties because
// its last tasklet ended (`ended`): Stackless then wakes main with §4.2's error at once, other
// threads or not (observed on 3.7.5: a thread's main sending on a channel the main thread receives
// from later got "the main tasklet is sending without a receiver available." as soon as the thread's
// other tasklet ended).
tasklet_impl* next_to_run_slow(runtime& r, bool ended);
inline tasklet_impl* next_to_run(runtime& r, bool ended = false) {
  if (r.head) [[likely]]
    return r.head;
  return next_to_run_slow(r, ended);
}

[[gnu::noinline]] tasklet_impl* next_to_run_slow(runtime& r, bool ended) {
  if (!r.runners.empty()) {
    tasklet_impl* innermost = r.runners.back();
    ring_append(r, innermost);  // off the stack; its run() returns
    return innermost;
  }
  tasklet_impl* m = r.main;
  if (m->state == tasklet_state::blocked) {
    const mail_wait waited = ended ? mail_wait::alone : wait_for_mail(r);
    if (waited == mail_wait::woken) return r.head;
    const int direction = m->direction;
    if (!unblock(r, m)) return r.head;  // woken after all
    // §5b: after waiting for other threads, the usual deadlock (§4.1's message, as when main blocks
    // with nobody alive: which of the two comes first is a race between the threads); else §4.2.
    m->pending = std::make_exception_ptr(deadlock_error(waited == mail_wait::deadlock ? msg::deadlock
                                                        : direction < 0             ? msg::main_receiving
                                                                                    : msg::main_sending));
  }
  ring_append(r, m);
  return m;
}

// Checks common to run/insert/switch_to (§5).
void check_owner(runtime& r, const tasklet_impl* t) {
  if (t->owner == &r) return;
  if (t->owner_thread == std::this_thread::get_id())
    misuse("this tasklet belongs to a runtime that weft::shutdown() ended; make a new one");
  misuse(msg::other_thread);
}

void check_runnable_target(runtime& r, const tasklet_impl* t, bool inserting) {
  // A tasklet of another thread that has ended, dead or not: Stackless names the thread first.
  if (t && t->owner && t->owner != &r && t->owner_thread != std::this_thread::get_id() && runtime_has_ended(*t->owner))
    misuse(inserting ? msg::no_thread_insert : msg::no_thread);
  if (!t || dead_or_orphaned(t)) misuse(msg::unbound);
  check_owner(r, t);
  if (t->state == tasklet_state::blocked) misuse(msg::blocked);
}

void leave_ring_paused(runtime& r, tasklet_impl* t) noexcept {
  ring_unlink(r, t);
  t->state = tasklet_state::paused;
  stop_waiting_in_run(r, t);
}

// The value (or exception) passes between the caller and p, the first tasklet in c's queue (§2.2, §2.5).
inline __attribute__((always_inline)) void transfer(channel_core* c, intent& in, tasklet_impl* self, tasklet_impl* p) {
  if (in.value > 0) {  // p receives (a receiver has no send_exception)
    if (in.exception) [[unlikely]]
      p->pending = std::move(in.exception);  // §2.5: the receiver's receive() throws it
    else
      c->move(p->slot, in.slot);
  } else if (p->send_exception) [[unlikely]] {
    self->pending = std::move(p->send_exception);  // leaves p's empty
  } else {
    c->move(in.slot, p->slot);
  }
}

// t, which waits in run(), gets the processor (§1.6): its run() returns. A tasklet woken out of its
// run() by someone else (inserted, raised into, run) stays on the stack of runners until it runs:
// Stackless ends a run() when its caller resumes, and with it every run() called after it that is
// still waiting, whose tasklets go back to the ring, innermost first (observed on 3.7.5: main's
// run() ended by a tasklet's insert of main put R2 and R1, waiting in nested run() calls, back in
// the ring, and their run() calls returned when they ran).
[[gnu::noinline]] void resume_from_run(runtime& r, tasklet_impl* t) noexcept {
  const auto at = std::find(r.runners.begin(), r.runners.end(), t);
  t->in_run = false;
  for (auto it = r.runners.end(); --it != at;) {  // ring_append leaves the stack as it is
    tasklet_impl* o = *it;
    o->in_run = false;
    if (o->state == tasklet_state::paused) ring_append(r, o);  // (one woken already is in the ring)
  }
  r.runners.erase(at, r.runners.end());
}
inline apply_result resumed(runtime& r, apply_result res) noexcept {
  if (res.next && res.next->in_run) [[unlikely]]
    resume_from_run(r, res.next);
  return res;
}

apply_result apply_channel_op(runtime& r, intent& in) {
  channel_core* c = in.channel;
  tasklet_impl* self = r.current;
  const int d = in.value;
  channel_guard guard(r, c);
  const bool partner_waiting = d > 0 ? c->balance < 0 : c->balance > 0;
  if (partner_waiting) {  // §2.2: the value passes at once
    if (!r.is_parallel()) __builtin_prefetch(c->resume_hint);  // (see channel_core::resume_hint)
    tasklet_impl* p = c->head;
    if (p->owner != &r || p->ghost) [[unlikely]] {
      // §5b: a tasklet of another thread is woken in its own thread; the caller goes on as if it
      // had been appended to the ring.
      check_partner_has_thread(p);
      transfer(c, in, self, p);
      queue_unlink(p);
      post_wake(p);
      return {self};
    }
    // When p runs next, its saved registers and return frames are asked for now rather than just
    // before the jump, so that those misses overlap the hand-off below. Serial state only: in
    // ordered mode this runs at a commit while p's next segment may already run on another thread
    // and write its context (a data race TSan reported).
    if (!r.is_parallel() && c->preference == -d && !c->schedule_all) context_prefetch_resumed_frames(p);
    transfer(c, in, self, p);
    queue_remove(p);  // p keeps its reference to c
    guard.unlock();
    if (c->schedule_all) {          // P to the tail, the caller yields: O1 O2 P C
      ring_append(r, p);
      ring_advance(r);
    } else if (c->preference == -d) {  // P right after the caller, and P runs now: P O1 O2 C
      ring_insert_after(r, self, p);
      ring_rotate_to(r, p);
    } else {                        // P to the tail, the caller continues: C O1 O2 P
      ring_append(r, p);
    }
    return resumed(r, {r.head});  // (the head may be a tasklet waiting in run(), §1.6)
  }
  // No partner: the caller would block.
  if (c->closing) {  // §2.6: fails and changes nothing
    if (in.nonblocking || in.stop_if_closed) return {self, op_status::closed};
    throw channel_closed();
  }
  if (in.nonblocking) return {self, op_status::would_block};
  // §4.1; with a tasklet waiting in a nested run() its run() returns instead (§1.6), and with other
  // threads alive, §5b: wait for them.
  if (r.ring_size == 1 && r.runners.empty() && (self == r.main || r.main->state == tasklet_state::blocked) &&
      !may_be_woken(r))
    throw deadlock_error(msg::deadlock);
  ring_unlink(r, self);
  channel_core* kept = self->channel;  // the channel of its last wait, if a hand-off ended it
  if (!c->head && !r.is_parallel())  // (then this runs on self's stack)
    c->resume_hint = reinterpret_cast<const void*>(context_stack_pointer());
  queue_append(c, self, d, kept == c);
  self->slot = in.slot;
  if (in.exception) [[unlikely]]  // (a tasklet that is not blocked has none)
    self->send_exception = std::move(in.exception);
  guard.unlock();
  if (kept && kept != c) [[unlikely]]
    channel_release_now(kept);
  return resumed(r, {next_to_run(r)});
}

}  // namespace

channel_exit leave_channel(runtime& r, tasklet_impl* t, bool unlink, tasklet_impl* ghost) {
  channel_core* c = t->channel;
  bool woken;
  {
    // One guarded section for the question and the unlink: between two, another thread could match
    // t (it unlinked t, then we unlinked it again: a crash TSan's CI run found in the kills test).
    channel_guard g(r, c);
    woken = t->remote_woken;
    if (woken)
      t->remote_woken = false;  // the matcher already unlinked it; its mail entry finds nothing to do
    else if (unlink && ghost)
      queue_replace(t, ghost);  // the ghost takes t's place, its balance and its reference to c
    else if (unlink)
      queue_unlink(t);
    else
      return channel_exit::stayed;
  }
  t->channel = nullptr;
  t->slot = nullptr;
  t->send_exception = nullptr;
  t->state = tasklet_state::paused;
  if (!ghost || woken) channel_release_now(c);
  if (!woken) return channel_exit::unlinked;
  ring_append(r, t);
  return channel_exit::woken;
}

namespace {
std::mutex kept_ghosts_lock;
auto* const kept_ghosts = new std::vector<tasklet_impl*>;  // never destroyed: reachable for leak checkers
}  // namespace

void settle_ghosts(runtime& r) noexcept {
  for (auto [g, t] : std::exchange(r.ghosts, {})) {
    channel_core* c = g->channel;
    bool keep;
    {
      channel_guard guard(r, c);
      // Met by nobody: no handle or waiter of another thread holds the channel (the ghost holds one
      // reference). A tasklet that refused to die waits there itself.
      keep = t->state == tasklet_state::dead && c->refs.load(std::memory_order_acquire) > 1;
      if (!keep) queue_unlink(g);
    }
    release(t);
    if (keep) {
      r.refs.fetch_add(1, std::memory_order_relaxed);  // the ghost's owner stays readable for good
      std::lock_guard lk(kept_ghosts_lock);
      kept_ghosts->push_back(g);
    } else {
      channel_release_now(c);
      delete g;
    }
  }
}

namespace {
// §5b: tasklets other threads woke join the ring before any intent applies.
inline void take_mail_if_any(runtime& r) {
  if (r.has_mail.load(std::memory_order_relaxed)) [[unlikely]]
    take_mail(r);
}
}  // namespace


apply_result apply_channel(runtime& r, intent& in) {
  take_mail_if_any(r);
  return apply_channel_op(r, in);  // (it calls resumed() where it switches)
}

namespace {
apply_result apply_intent(runtime& r, intent& in);
}  // namespace

apply_result apply(runtime& r, intent& in) {
  take_mail_if_any(r);
  return resumed(r, apply_intent(r, in));
}

namespace {
apply_result apply_intent(runtime& r, intent& in) {
  tasklet_impl* self = r.current;
  tasklet_impl* t = in.target;
  switch (in.kind) {
    case intent_kind::yield:  // §1.4
      if (r.ring_size > 1) ring_advance(r);
      return {r.head};

    case intent_kind::run_main:  // §1.6: from any tasklet; the calls nest
      if (r.ring_size == 1) return {self};
      ring_unlink(r, self);
      self->state = tasklet_state::paused;
      self->in_run = true;
      r.runners.push_back(self);
      return {r.head};

    case intent_kind::remove_self:  // §1.5, §4.1, §4.3; alone with a run() waiting, it returns (§1.6)
      if (r.ring_size == 1 && r.runners.empty()) {
        if (self == r.main) return {self};
        if (r.main->state == tasklet_state::blocked && !may_be_woken(r))  // else §5b: wait
          throw deadlock_error(msg::deadlock);
      }
      leave_ring_paused(r, self);
      return {next_to_run(r)};

    case intent_kind::insert:  // §1.1, §1.2
      check_runnable_target(r, t, true);
      if (t->state == tasklet_state::paused) ring_append(r, t);
      return {self};

    case intent_kind::remove:  // §1.3
      if (!t || t->state == tasklet_state::dead || t->state == tasklet_state::paused) return {self};
      check_owner(r, t);
      if (t == self) misuse(msg::remove_current);
      if (t->state == tasklet_state::blocked) misuse(msg::remove_blocked);
      if (r.is_parallel()) ordered_abort_in_flight(r, t);  // its speculation assumed it would run
      leave_ring_paused(r, t);
      return {self};

    case intent_kind::run:  // §1.8
      check_runnable_target(r, t, false);
      if (t == self) return {self};
      if (t->state == tasklet_state::paused) ring_append(r, t);
      ring_rotate_to(r, t);
      return {t};

    case intent_kind::switch_to:  // §1.9
      check_runnable_target(r, t, false);
      if (t == self) return {self};
      if (t->state == tasklet_state::paused) ring_append(r, t);
      leave_ring_paused(r, self);
      ring_rotate_to(r, t);
      return {t};

    case intent_kind::raise: {  // §3.1 - §3.4
      if (!t || dead_or_orphaned(t)) {
        if (in.kill) return {self};
        misuse(msg::throw_dead);
      }
      check_owner(r, t);
      if (t == self) std::rethrow_exception(in.exception);  // thrown in the caller, at once
      // Ordered mode: what t runs speculatively did not see this exception. If it is running now,
      // it is aborted when it ends (and, if t dies here, its stack is retired then).
      const bool still_running = r.is_parallel() && ordered_abort_in_flight(r, t);
      if (in.kill && !t->started && t->state == tasklet_state::paused) {  // dies at once, nobody runs
        t->state = tasklet_state::dead;
        if (t->registered) --r.alive;
        if (!still_running) {
          drop_unrun_function(t);
          retire(r, t);
        }
        return {self};
      }
      if (t->state == tasklet_state::blocked) {
        if (in.shutdown && r.thread_ending) [[unlikely]]
          unblock_leaving_ghost(r, t);
        else
          unblock(r, t);
      }
      if (in.shutdown && t->state == tasklet_state::runnable) leave_ring_paused(r, t);
      if (t->state == tasklet_state::paused) ring_append(r, t);
      t->pending = std::move(in.exception);
      ring_rotate_to(r, t);  // (a shutdown victim was appended just before main: it runs, then main)
      return {t};
    }

    case intent_kind::exit: {  // §1.10, §3.2, §3.5
      ring_unlink(r, self);
      self->state = tasklet_state::dead;
      drop_kept_channel(self);
      --r.alive;
      if (!in.exception) return {next_to_run(r, true)};
      // An exception escaped: the innermost waiting run() gets it (§1.6), else main, where it waits;
      // it becomes current at once.
      tasklet_impl* m = r.runners.empty() ? r.main : r.runners.back();
      if (m->state != tasklet_state::runnable) {
        if (m->state != tasklet_state::blocked || unblock(r, m))
          ring_append(r, m);  // i.e. in the dead tasklet's place, just before its successor
      }
      note_escaped(in.exception, self);  // named by the terminate handler if nobody catches it
      m->pending = std::move(in.exception);
      ring_rotate_to(r, m);
      return {m};
    }

    case intent_kind::channel_op:
      return apply_channel_op(r, in);

    case intent_kind::channel_close: {
      channel_guard g(r, in.channel);
      in.channel->closing = true;  // §2.6: blocked tasklets are not woken
      return {self};
    }
    case intent_kind::channel_open: {
      channel_guard g(r, in.channel);
      in.channel->closing = false;
      return {self};
    }
    case intent_kind::channel_preference: {
      channel_guard g(r, in.channel);
      in.channel->preference = in.value;
      return {self};
    }
    case intent_kind::channel_schedule_all: {
      channel_guard g(r, in.channel);
      in.channel->schedule_all = in.value != 0;
      return {self};
    }
    case intent_kind::bind:
      register_bound(r, t);
      if (in.value) ring_append(r, t);  // weft::spawn: inserted as well (§1.1)
      return {self};
    case intent_kind::set_name:
      t->name = std::move(*in.text);
      return {self};
  }
  return {self};
}
}  // namespace

}  // namespace weft::detail
