// Channels shared by tasklets of several threads (SEMANTICS.md §5b).
//
// Each thread that uses weft has its own runtime (DESIGN.md §4.1); a channel may be used by tasklets
// of several. Two mechanisms:
//
// * channel_guard: exclusive access to a channel's state. The first runtime to operate on a channel
//   owns it and works without a lock: it stores the channel in its `busy_channel`, then (after the
//   light half of an asymmetric fence, a compiler barrier where membarrier() exists) checks `shared`.
//   Another runtime sets `shared` for good, issues the heavy half (membarrier), waits until the
//   owner's `busy_channel` is no longer this channel, and from then on everybody takes the channel's
//   mutex. A Dekker handshake: either the owner sees `shared` and locks, or the sharer sees the owner
//   busy and waits. Programs whose channels stay in one thread pay a store and a load per operation.
//
// * Mail: a tasklet matched by a tasklet of another runtime is woken in its own thread. The matcher
//   (holding the channel's lock) moves the value, takes the partner out of the queue, marks it
//   `remote_woken` and posts it to its runtime's mail; that runtime appends it to its ring when it
//   next applies an intent (apply.cpp; in ordered mode, at its next commit) or, if it waits for
//   mail, when it wakes up. Until then the partner is still `blocked` for its own runtime; anything
//   that takes a blocked tasklet out of its channel (kill, raise, shutdown, deadlock) and the mail
//   itself go through leave_channel (apply.cpp), which checks `remote_woken` and unlinks in one
//   section under the channel's lock.
//
// Locks, in the order they are taken: a channel's `lock` (or the owner's busy mark), then `registry`.
// The registry lock protects every runtime's mail, waiting state, `ended`, and the counts below. A
// runtime waits (condition variable, no busy wait) only when its main is blocked and its ring is
// empty; it gives up (deadlock) when every live runtime waits: nobody is left to wake anybody.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <new>
#include <stdexcept>
#include <thread>

#include <dlfcn.h>
#include <pthread.h>

#include "runtime.hpp"
#include "weft/detail/epoch.hpp"
#include "weft/detail/stm_core.hpp"

namespace weft::detail {

namespace {

struct registry_state {
  std::mutex lock;
  std::size_t live = 0;            // runtimes whose thread has not ended
  std::size_t unstarted = 0;       // threads the program made that have not used weft (yet) nor ended
  std::vector<runtime*> waiters;   // runtimes waiting for mail, in the order they began
  bool exiting = false;            // process_exit_begins() was called, on exiting_thread
  std::thread::id exiting_thread;
};
registry_state& registry() {
  static auto* const r = new registry_state;  // never destroyed: threads may end during static destruction
  return *r;
}

// Wakes w, which waits for mail: it no longer counts as waiting from now on (so that the next runtime
// to wait does not see a deadlock while w is still on its way out of the condition variable).
void stop_waiting(registry_state& g, runtime& w) noexcept {
  g.waiters.erase(std::find(g.waiters.begin(), g.waiters.end(), &w));
  w.waiting_for_mail = false;
  w.mail_arrived.notify_one();
}

// Under the lock: the process is exiting on another thread, which ends the runtimes one by one; a
// thread that finds nobody left to wake it waits for the end of the process instead of reporting a
// deadlock (its main would throw, and std::terminate would end the exit with status 134). The
// exiting thread itself (atexit handlers, static destructors) still gets its deadlock errors.
bool waits_out_the_exit(const registry_state& g) noexcept {
  return g.exiting && g.exiting_thread != std::this_thread::get_id();
}

// Everybody still alive waits for mail: nobody can send any more. The last to begin waiting is told
// (as the last runnable tasklet of one runtime is, SEMANTICS.md §4.1).
void tell_deadlock_if_all_wait(registry_state& g) noexcept {
  if (g.exiting) return;  // nobody is told: the process ends
  if (g.live == 0 || g.unstarted != 0 || g.waiters.size() != g.live) return;
  runtime* w = g.waiters.back();
  stop_waiting(g, *w);
  w->mail_deadlock = true;
}

// A thread the program made counts as one that may still use weft from pthread_create on (in the
// creating thread, so that a main that blocks right after starting it waits) until its first weft
// call (then its runtime counts) or its end. So does a creating thread that has no runtime (the
// process's first thread, or one whose runtime weft::shutdown() ended): without it, threads started
// before main's first weft call found nobody alive, or everybody waiting, and reported a deadlock.
// Stackless likewise waits while any other thread lives.
struct unstarted_mark {
  bool counted = false;
  ~unstarted_mark() {
    if (!counted) return;
    registry_state& g = registry();
    std::lock_guard lk(g.lock);
    --g.unstarted;
    tell_deadlock_if_all_wait(g);
  }
};
thread_local unstarted_mark this_thread_unstarted;
constinit thread_local bool making_internal_thread = false;

struct counted_start {
  void* (*start)(void*);
  void* arg;
};
void* counted_thread_main(void* p) {
  const counted_start s = *static_cast<counted_start*>(p);
  delete static_cast<counted_start*>(p);
  this_thread_unstarted.counted = true;  // counted by the creator; uncounted at exit or first use
  return s.start(s.arg);
}

// The owner announces an operation; true if the channel is still unshared (then it may go on alone).
bool owner_enters(runtime& r, channel_core* c) noexcept {
  r.busy_channel.store(c, std::memory_order_release);  // (see channel_guard's constructor)
  asymmetric_fence_light();  // pairs with the sharer's asymmetric_fence_heavy
  if (!c->shared.load(std::memory_order_relaxed)) return true;
  r.busy_channel.store(nullptr, std::memory_order_release);
  return false;
}

// Another runtime's first operation: makes the channel shared and waits until the owner is not in
// an unlocked operation on it (the owner's thread runs user code between operations, never inside one).
// What ends the wait is the owner's release of c: nullptr at the end of its operation, or, when it
// has gone on to an operation on another channel it owns, that channel — every busy mark is a
// release store, so either way the owner's operation on c happens before ours (with relaxed marks,
// reading the second gave no such order: TSan found the sharer's queue_append racing with the
// owner's read of c->balance, 1 run in ~40 of the 5b tests at two workers).
void make_shared(channel_core* c, runtime* owner) noexcept {
  c->shared.store(true, std::memory_order_seq_cst);
  asymmetric_fence_heavy();
  while (owner->busy_channel.load(std::memory_order_acquire) == c) std::this_thread::yield();
}

}  // namespace

channel_core::~channel_core() {
  if (runtime* o = owner.load(std::memory_order_acquire)) {
    o->channels.fetch_sub(1, std::memory_order_relaxed);
    release_runtime(o);
  }
}

channel_guard::how channel_guard::enter_slow(runtime& r, channel_core* c) {
  runtime* o = c->owner.load(std::memory_order_acquire);
  if (o == nullptr && c->owner.compare_exchange_strong(o, &r, std::memory_order_acq_rel)) {
    r.refs.fetch_add(1, std::memory_order_relaxed);  // dropped by ~channel_core
    r.channels.fetch_add(1, std::memory_order_relaxed);
    o = &r;
  }
  if (o == &r) {
    if (owner_enters(r, c)) return how::busy;
  } else if (!c->shared.load(std::memory_order_acquire)) {
    make_shared(c, o);
  }
  c->lock.lock();
  return how::locked;
}

void runtime_registered(runtime&) {
  registry_state& g = registry();
  std::lock_guard lk(g.lock);
  ++g.live;
  if (this_thread_unstarted.counted) {
    this_thread_unstarted.counted = false;
    --g.unstarted;
  }
}

internal_thread_scope::internal_thread_scope() noexcept { making_internal_thread = true; }
internal_thread_scope::~internal_thread_scope() { making_internal_thread = false; }

void runtime_ended(runtime& r) noexcept {
  std::vector<tasklet_impl*> left;
  {
    registry_state& g = registry();
    std::lock_guard lk(g.lock);
    r.ended = true;
    --g.live;
    left.swap(r.mail);
    r.has_mail.store(false, std::memory_order_relaxed);
    tell_deadlock_if_all_wait(g);
  }
  for (tasklet_impl* t : left) release(t);  // woken after the thread's shutdown: they keep blocking
}

// Also retry()'s check (stm_core.hpp), from a thread that may have no runtime (a program that only
// uses the STM: every live runtime is then another thread's) or may still count as unstarted.
bool other_runtimes_alive() noexcept {
  std::lock_guard lk(registry().lock);
  const std::size_t own_runtime = thread_runtime() ? 1 : 0;
  const std::size_t own_unstarted = this_thread_unstarted.counted ? 1 : 0;
  return registry().live > own_runtime || registry().unstarted > own_unstarted;
}

bool may_be_woken(const runtime& r) noexcept {
  // Mail counts: a thread that woke one of ours and then ended leaves nobody alive, yet the woken
  // tasklet will run (the caller's take_mail_if_any looked before the mail arrived).
  std::lock_guard lk(registry().lock);
  const std::size_t own_runtime = r.ended ? 0 : 1;  // (r may apply on an ordered-mode worker thread)
  const std::size_t own_unstarted = this_thread_unstarted.counted ? 1 : 0;
  return !r.mail.empty() || registry().live > own_runtime || registry().unstarted > own_unstarted ||
         waits_out_the_exit(registry());
}

namespace {
[[maybe_unused]] const bool retry_hook_set = (another_thread_may_commit = &other_runtimes_alive, true);
}  // namespace

bool orphaned(const tasklet_impl* t) noexcept {
  if (t->state != tasklet_state::paused || t->started || t->registered || t->is_main || !t->owner) return false;
  return runtime_has_ended(*t->owner);
}

bool runtime_has_ended(const runtime& r) noexcept {
  std::lock_guard lk(registry().lock);
  return r.ended;
}

void check_partner_has_thread(const tasklet_impl* p) {
  if (p->ghost || runtime_has_ended(*p->owner)) throw std::runtime_error("tasklet has no thread");
}

void post_wake(tasklet_impl* p) {
  p->remote_woken = true;
  retain(p);  // the mail's reference
  runtime& to = *p->owner;
  registry_state& g = registry();
  std::lock_guard lk(g.lock);
  if (to.ended) {  // ended since check_partner_has_thread: the tasklet stays blocked for good
    release(p);
    return;
  }
  to.mail.push_back(p);
  to.has_mail.store(true, std::memory_order_relaxed);
  if (to.waiting_for_mail) stop_waiting(g, to);
}

void take_mail(runtime& r) {
  std::vector<tasklet_impl*> mail;
  {
    std::lock_guard lk(registry().lock);
    mail.swap(r.mail);
    r.has_mail.store(false, std::memory_order_relaxed);
  }
  for (tasklet_impl* t : mail) {
    // Already taken (by a kill or raise of ours, or an earlier copy of this mail): nothing to do.
    if (t->state == tasklet_state::blocked && t->channel) (void)leave_channel(r, t, false);
    release(t);
  }
}

mail_wait wait_for_mail(runtime& r) {
  registry_state& g = registry();
  std::unique_lock lk(g.lock);
  for (;;) {
    if (!r.mail.empty()) {
      lk.unlock();
      take_mail(r);
      if (r.head) return mail_wait::woken;
      lk.lock();
      continue;
    }
    if (!waits_out_the_exit(g) && g.waiters.size() + 1 >= g.live && g.unstarted == 0)  // nobody else could wake us
      return g.live <= 1 ? mail_wait::alone : mail_wait::deadlock;
    r.waiting_for_mail = true;
    r.mail_deadlock = false;
    g.waiters.push_back(&r);
    r.mail_arrived.wait(lk, [&] { return !r.waiting_for_mail; });  // stop_waiting: mail or deadlock
    if (r.mail.empty() && r.mail_deadlock) return mail_wait::deadlock;
  }
}

void process_exit_begins() noexcept {
  registry_state& g = registry();
  std::lock_guard lk(g.lock);
  if (g.exiting) return;  // (the first caller's exit is the one under way)
  g.exiting = true;
  g.exiting_thread = std::this_thread::get_id();
}

}  // namespace weft::detail

// Every thread the program makes (std::thread, pthread_create, from libstdc++ too: a definition in
// the executable comes first in symbol lookup) is counted as one that may still use weft; the real
// function is the next definition (libc, or a sanitizer's interceptor).
extern "C" int pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*start)(void*), void* arg) {
  using create_fn = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
  static std::atomic<create_fn> next{nullptr};  // constant-initialised: safe before any constructor
  create_fn real = next.load(std::memory_order_acquire);
  if (!real) {
    real = reinterpret_cast<create_fn>(::dlsym(RTLD_NEXT, "pthread_create"));
    if (!real) return EAGAIN;
    next.store(real, std::memory_order_release);
  }
  using namespace weft::detail;
  if (making_internal_thread) return real(thread, attr, start, arg);
  auto* s = new (std::nothrow) counted_start{start, arg};
  if (!s) return EAGAIN;
  {
    registry_state& g = registry();
    std::lock_guard lk(g.lock);
    ++g.unstarted;
    // The creator may use weft later too (typically: a main that makes channels, starts threads that
    // block on them, then spawns their partners). It counts like the new thread, until its first
    // weft call or its end; threads made by this hook are counted already (their own creator did).
    if (!this_thread_unstarted.counted && !thread_runtime()) {
      this_thread_unstarted.counted = true;
      ++g.unstarted;
    }
  }
  const int rc = real(thread, attr, &counted_thread_main, s);
  if (rc != 0) {
    delete s;
    registry_state& g = registry();
    std::lock_guard lk(g.lock);
    --g.unstarted;
    tell_deadlock_if_all_wait(g);
  }
  return rc;
}
