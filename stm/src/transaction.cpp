// The transaction protocol (TL2 with LSA snapshot extension), inevitability, retry and or_else
// scopes, contention management, conflict records and statistics. See weft/detail/stm_core.hpp for
// the lock-word layout and the read/write barriers.
//
// The version clock is lazy (TL2's GV5, with LSA extension): a commit does not increment it.
// Commit of a writing transaction: lock every written tvar (CAS unlocked -> owner|1; a tvar reserved
// by the inevitable transaction is waited for with no lock held), load the clock c, wv = c + 1,
// validate the reads, write back, unlock with version wv. The clock moves only when a transaction
// meets a version newer than its snapshot rv: it advances the clock to that version (CAS), checks
// that everything it read is still current, and continues with rv = the new clock (extension).
// Why this is safe:
//   * every version ever written is <= clock + 1, and every snapshot rv is <= clock, so a version
//     written after a snapshot was taken is > rv: a recorded read (version <= rv) that is overwritten
//     changes version, and the version that triggered an extension is read again, not recorded;
//   * a committer loads the clock only after holding its locks (all seq_cst), so a snapshot rv >= wv
//     was taken after those locks: reads made under it see the lock (and wait) or the new value;
//   * several commits may share a version, so validation is never skipped on the version alone.
// Why: a counter incremented by every commit moves its cache line to every committing core; here
// the clock line is written only when someone reads data newer than its snapshot, and a commit
// costs a plain load of it (measured in bench/stm: issue 4's note).
//
// Solo mode: while one descriptor is registered (one thread uses the STM), its transactions run
// "solo": reads are plain loads (no seqlock, no read log), writes stay in the redo log (or_else,
// exceptions and allocation rollback work as always) and commit stores them with no lock, no clock
// and no validation. solo_state holds the owner (claimed under registry_lock when the registry is
// down to one descriptor). A second thread registering (its first transaction, or a direct tvar
// write) revokes it before doing anything else: it marks the state (owner | 1), runs the heavy side
// of an asymmetric fence and waits while the owner's `in_solo` flag is up. The owner raises that flag
// only around its write-back, checking the state after
// the light side of the fence: either it sees the mark and abandons the attempt (it re-runs normally;
// nothing was published), or the revoker waits for a write-back that runs no user code. A solo
// attempt that is still running when the mark appears re-checks the state after every read, so a
// value committed by the new thread is never mixed with older ones: the attempt aborts instead.
// Solo commits do not change versions: no transaction of another thread overlaps them, and the
// revocation's release/acquire chain makes their writes visible to everything that follows.
// Unregistered threads may still read tvars outside transactions: a value is one atomic word and
// replaced boxes go to the epoch GC.
//
// Inevitability: one token (inevitable_holder). Its holder reserves every tvar it reads or writes;
// others keep reading them and committing elsewhere, but cannot lock them until it commits, so it
// can never be invalidated. A transaction that aborts `inevitable_after` times in a row takes the
// token before its next attempt.
// Exclusive inevitability (a tasklet segment at the head of an ordered run): nothing else of its run
// commits before it anyway (commit order), so instead of reserving what it touches (a CAS per tvar:
// an audit of a million tvars ran 2.2x slower than its plain reads), the holder publishes itself in
// exclusive_holder and every other committer waits for it: a committer checks that word after taking
// its write locks (seq_cst CASes, then a seq_cst load) and, if it is set, lets go of its locks and
// waits. The holder stores the word (seq_cst) before its next read, and waits out a tvar it finds
// locked (a committer that passed the check before the store): of the two, at least one sees the
// other (store-buffering with seq_cst on both sides), so the holder's reads are never invalidated
// and need no log. Other threads' writing commits stall meanwhile (as under libitm's serial mode);
// reads never do.
#include <bit>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <iterator>
#include <stdexcept>
#include <optional>
#include <utility>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "observe_impl.hpp"
#include "side_tables.hpp"
#include "weft/stm.hpp"
#include "weft/detail/thread_exit.hpp"

namespace weft::detail {

void link_tx_alloc() noexcept;  // gc/src/tx_alloc.cpp
void link_profiler() noexcept;  // stm/src/profiler.cpp (WEFT_PROFILE)

__attribute__((tls_model("initial-exec"))) constinit thread_local transaction* current_tx = nullptr;

void (*segment_abort_jump)() = nullptr;
constinit thread_local bool exception_storage_dying = false;
constinit thread_local std::uint64_t scheduler_ops_refused = 0;
void (*segment_park_for_head)() = nullptr;
bool (*running_in_tasklet)() noexcept = nullptr;
bool (*another_thread_may_commit)() noexcept = nullptr;
std::atomic<void* (*)(const transaction*, const void*)> outside_write_begin{nullptr};
std::atomic<void (*)(void*)> outside_write_end{nullptr};

// Solo mode: solo_state = claim number << 2 | solo_active | solo_revoking, and solo_owner the
// descriptor of the current claim. Each claim has a new number, so an attempt that began solo can
// tell that solo mode was revoked and handed back to it meanwhile (no ABA). Both are written under
// registry_lock, except the revoker's final store.
alignas(64) std::atomic<std::uint64_t> solo_state{0};
std::atomic<transaction*> solo_owner{nullptr};

// Sole run: sole_run_state = claim number << 2 | sole_run_active | sole_run_revoking, and
// sole_run_owner the ordered run of the current claim (see claim_sole_run_locked). Written under
// registry_lock, except the revoker's final store and sole_run_end's.
alignas(64) std::atomic<std::uint64_t> sole_run_state{0};
std::atomic<const void*> sole_run_owner{nullptr};
// Raised by a segment around a commit without tvar locks (commit_sole_run): a revoker waits until it
// drops. Alone in its line: written twice per such commit, read by revokers only.
alignas(64) std::atomic<bool> sole_run_committing{false};
std::atomic<const void* (*)() noexcept> thread_run{nullptr};

namespace {

// The global version clock, alone in its cache line.
struct alignas(64) padded_clock {
  std::atomic<std::uint64_t> value{0};
};
padded_clock clock;

// A commit of `tx` (or a direct write of `single`) outside any tasklet segment, from before its locks
// to after its write-back: see outside_write_begin.
class outside_write_scope {
 public:
  outside_write_scope(const transaction* tx, const void* single) {
    if (!tx && !single) return;
    if (auto* begin = outside_write_begin.load(std::memory_order_acquire)) [[unlikely]]
      token_ = begin(tx, single);
  }
  ~outside_write_scope() {
    if (token_) outside_write_end.load(std::memory_order_relaxed)(token_);
  }
  outside_write_scope(const outside_write_scope&) = delete;
  outside_write_scope& operator=(const outside_write_scope&) = delete;

 private:
  void* token_ = nullptr;
};

std::atomic<transaction*> inevitable_holder{nullptr};
alignas(64) std::atomic<const transaction*> exclusive_holder{nullptr};  // read by every writing commit

std::atomic<unsigned> inevitable_after{8};

// Counts destructions of tvars other threads may still reach (committed by a transaction, or
// outside one while several threads use the STM). A retry() waiter holds pointers to the tvars it
// read across its sleep, outside any epoch critical section: it checks them only while no
// destruction has happened since it started waiting (see wait_for_change).
std::atomic<std::uint64_t> tvars_destroyed{0};

// retry(): waiters sleep on commit_signal; writers bump it when someone waits.
alignas(64) std::atomic<std::uint32_t> commit_signal{0};
alignas(64) std::atomic<std::uint32_t> retry_waiters{0};

// Registry of descriptors for stats(); exited threads are summed into `departed`.
// Every global here is constant-initialised or made on first use: a program's own static
// initialisers (a named tvar at namespace scope, a transaction in a constructor) may run before
// this file's.
std::mutex registry_lock;  // protects registry and departed; never held inside a transaction
std::vector<transaction*>& registry() {
  static auto* r = new std::vector<transaction*>;  // never destroyed: threads may exit after main
  return *r;
}
stm_counters departed;
stm_counters departed_segments;  // ordered runs' segment records (segment_unregister)

// One step of a wait for another thread: pause for the first `spin_limit` steps, then yield (the
// thread waited for may have been preempted).
inline void relax(unsigned steps, unsigned spin_limit) noexcept {
  if (steps < spin_limit)
    cpu_relax();
  else
    std::this_thread::yield();
}

// A writing commit (or direct write) found an exclusive holder after taking its locks, and let them
// go: it waits until the holder has committed.
void wait_for_exclusive(const transaction* self) noexcept {
  for (unsigned spins = 0;; ++spins) {
    const transaction* h = exclusive_holder.load(std::memory_order_acquire);
    if (!h || h == self) return;
    relax(spins, 64);
  }
}
// Waits for the inevitability token and takes it (its holder ends without waiting for us).
void take_token(transaction* self) noexcept {
  transaction* expected = nullptr;
  for (unsigned spins = 0; !inevitable_holder.compare_exchange_weak(expected, self, std::memory_order_acquire);
       ++spins) {
    expected = nullptr;
    relax(spins, 64);
  }
}
bool exclusive_elsewhere(const transaction* self) noexcept {
  const transaction* h = exclusive_holder.load(std::memory_order_seq_cst);  // after the locks' CASes
  return h && h != self;
}

// An on/off setting: on unless its environment variable is "0", read when first needed (a static
// initialiser may need it before this file's), until configure_stm() sets it.
class env_switch {
 public:
  explicit constexpr env_switch(const char* variable) : variable_(variable) {}
  bool on() noexcept {
    int v = state_.load(std::memory_order_relaxed);
    if (v < 0) {
      const char* e = std::getenv(variable_);
      int unset = -1;
      v = (e && e[0] == '0' && e[1] == '\0') ? 0 : 1;
      if (!state_.compare_exchange_strong(unset, v, std::memory_order_relaxed)) v = unset;
    }
    return v == 1;
  }
  void set(bool on) noexcept { state_.store(on ? 1 : 0, std::memory_order_relaxed); }

 private:
  const char* variable_;
  std::atomic<int> state_{-1};  // -1 until first needed, else 0 or 1
};
constinit env_switch solo_setting{"WEFT_STM_SOLO"};
bool solo_enabled() noexcept { return solo_setting.on(); }
constexpr std::uint64_t solo_revoking = 1, solo_active = 2;

// WEFT_STM_PRIVATIZATION=0 or stm_options::privatization_safe = false turns privatization safety off.
constinit env_switch privatization_setting{"WEFT_STM_PRIVATIZATION"};
bool privatization_safe() noexcept { return privatization_setting.on(); }
// Under registry_lock: frees outside transactions are deferred while two or more threads use the
// STM (see alloc_log.hpp).
void update_privatization_locked() noexcept {
  defer_plain_frees.store(registry().size() >= 2 && privatization_safe(), std::memory_order_release);
}

// Under registry_lock: hand solo mode to the only registered descriptor, if there is one.
void claim_solo_locked() noexcept {
  const std::uint64_t s = solo_state.load(std::memory_order_relaxed);
  if (registry().size() == 1 && solo_enabled() && !(s & solo_active)) {
    solo_owner.store(registry().front(), std::memory_order_relaxed);
    solo_state.store(((s >> 2) + 1) << 2 | solo_active, std::memory_order_release);
  }
}

// Ends solo mode (if on; not when it is `self`'s) and returns once no solo write-back can be running:
// attempts still in flight see the mark at their next read or at commit and re-run normally. It waits
// for a write-back (no user code) or for the end of a solo attempt made inevitable, which the owner's
// thread itself never calls this from (its own descriptor exists; configure_stm() is refused in a
// transaction).
void revoke_solo(const transaction* self) noexcept {
  std::uint64_t s = solo_state.load(std::memory_order_acquire);
  for (unsigned spins = 0; s & solo_active; ++spins) {
    // Solo mode handed to ourselves meanwhile (the other thread exited): nothing to revoke.
    if (!(s & solo_revoking) && solo_owner.load(std::memory_order_relaxed) == self) return;
    if (!(s & solo_revoking) &&
        solo_state.compare_exchange_weak(s, s | solo_revoking, std::memory_order_seq_cst, std::memory_order_acquire)) {
      const transaction* owner = solo_owner.load(std::memory_order_relaxed);  // set before the claim's release
      asymmetric_fence_heavy();  // pairs with the owner's light fence in commit_solo()
      for (unsigned w = 0; owner->in_solo.load(std::memory_order_acquire); ++w) {
        // A solo write-back is running (short), or a solo transaction made inevitable (user code,
        // perhaps I/O: after a while, sleep).
        if (w < 4096)
          relax(w, 64);
        else
          std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
      solo_state.store(s & ~(solo_active | solo_revoking), std::memory_order_release);
      return;
    }
    // Someone else is revoking it: wait for them.
    relax(spins, 64);
    s = solo_state.load(std::memory_order_acquire);
  }
}

// --- sole run -----------------------------------------------------------------------------------
// An ordered run commits its segments one at a time, under its commit lock. While nobody else writes
// tvars — every registered descriptor is the run's: its segments' and those of its threads, whose
// transactions outside segments run between its commits (main's code at the head; the commits' own
// work under the lock) — a segment's commit needs no tvar locks against other committers; it still
// marks each written tvar locked, with a plain store, for the run's speculative readers (their
// seqlock read), and validates its reads once instead of twice. That takes a locked
// compare-and-swap per written tvar off the run's one serial path (bank: 200 a segment).
// Like solo mode: a descriptor of anyone else registering (a thread's first transaction or direct
// write, another run's segment) revokes it before that descriptor is used — it marks the state,
// runs the heavy fence and waits while a commit without locks is in flight (sole_run_committing;
// the committer raises it, runs the light fence and checks the state, else it commits with locks).
// Claimed again (under registry_lock) when the registry is down to the run's descriptors.
constinit env_switch sole_run_setting{"WEFT_STM_SOLE_RUN"};
constexpr std::uint64_t sole_run_revoking = 1, sole_run_active = 2;
const void* sole_run_candidate = nullptr;  // under registry_lock: the run that asked (sole_run_begin)

void claim_sole_run_locked() noexcept {
  const void* run = sole_run_candidate;
  const std::uint64_t s = sole_run_state.load(std::memory_order_relaxed);
  if (!run || (s & sole_run_active) || !sole_run_setting.on()) return;
  for (const transaction* d : registry())
    if (d->run.load(std::memory_order_relaxed) != run) return;
  sole_run_owner.store(run, std::memory_order_relaxed);
  sole_run_state.store(((s >> 2) + 1) << 2 | sole_run_active, std::memory_order_release);
}

// Under registry_lock: a descriptor of `run` registered; true if the caller must revoke sole-run
// mode (outside the lock) before it uses the descriptor.
bool sole_run_blocks_locked(const void* run) noexcept {
  return (sole_run_state.load(std::memory_order_acquire) & sole_run_active) &&
         sole_run_owner.load(std::memory_order_relaxed) != run;
}

// Ends sole-run mode (if on) and returns once no commit without locks can be running or start.
void revoke_sole_run() noexcept {
  std::uint64_t s = sole_run_state.load(std::memory_order_acquire);
  for (unsigned spins = 0; s & sole_run_active; ++spins) {
    if (!(s & sole_run_revoking) && sole_run_state.compare_exchange_weak(s, s | sole_run_revoking, std::memory_order_seq_cst,
                                                                         std::memory_order_acquire)) {
      asymmetric_fence_heavy();  // pairs with the committer's light fence in commit()
      for (unsigned w = 0; sole_run_committing.load(std::memory_order_acquire); ++w) relax(w, 64);  // no user code
      sole_run_state.store(s & ~(sole_run_active | sole_run_revoking), std::memory_order_release);
      return;
    }
    relax(spins, 64);  // someone else is revoking it: wait for them
    s = sole_run_state.load(std::memory_order_acquire);
  }
}

std::uint64_t now_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

// Every counter, once: the descriptor's atomic and the field of stm_counters it is reported in.
constexpr std::pair<std::atomic<std::uint64_t> counters::*, std::uint64_t stm_counters::*> counter_fields[] = {
    {&counters::commits, &stm_counters::commits},
    {&counters::read_only_commits, &stm_counters::read_only_commits},
    {&counters::aborts_conflict, &stm_counters::aborts_conflict},
    {&counters::aborts_validation, &stm_counters::aborts_validation},
    {&counters::aborts_locked, &stm_counters::aborts_locked},
    {&counters::aborts_inevitable, &stm_counters::aborts_inevitable},
    {&counters::aborts_exception, &stm_counters::aborts_exception},
    {&counters::retries, &stm_counters::retries},
    {&counters::inevitable, &stm_counters::inevitable},
    {&counters::extensions, &stm_counters::extensions},
    {&counters::locks_acquired, &stm_counters::locks_acquired},
    {&counters::solo, &stm_counters::solo},
    {&counters::sole_run, &stm_counters::sole_run},
    {&counters::allocations_undone, &stm_counters::allocations_undone},
    {&counters::frees_deferred, &stm_counters::frees_deferred},
};
static_assert(sizeof(stm_counters) == std::size(counter_fields) * sizeof(std::uint64_t),
              "every stm_counters field is listed in counter_fields");

stm_counters snapshot(const counters& c) {
  stm_counters s;
  for (const auto& [from, to] : counter_fields) s.*to = (c.*from).load(std::memory_order_relaxed);
  return s;
}

// Runs when the thread exits, after its thread_local destructors (which may run transactions), and
// again if a later destructor ran one and so registered a new descriptor (thread_exit.hpp): a
// descriptor never outlives its thread, and stats() counts live threads only.
void release_descriptor(void* value) noexcept {
  auto* tx = static_cast<transaction*>(value);
  bool revoked_owner = false;
  {
    std::lock_guard lock(registry_lock);
    departed += snapshot(tx->stats);
    std::erase(registry(), tx);
    update_privatization_locked();
    std::uint64_t s = solo_state.load(std::memory_order_relaxed);
    if ((s & solo_active) && solo_owner.load(std::memory_order_relaxed) == tx) {
      // A revoker (it does not take the lock) may mark the state at any moment: only a CAS may
      // end the claim, and a marked claim means the revoker may still look at our in_solo flag.
      if ((s & solo_revoking) || !solo_state.compare_exchange_strong(s, s & ~solo_active, std::memory_order_acq_rel))
        revoked_owner = true;
    }
    if (!revoked_owner) claim_solo_locked();  // the thread left alone (if any) runs solo from now on
    claim_sole_run_locked();
  }
  if (revoked_owner) {
    while (solo_state.load(std::memory_order_acquire) & solo_active) std::this_thread::yield();
    std::lock_guard lock(registry_lock);
    claim_solo_locked();
  }
  thread_tx = nullptr;
  delete tx;
}

thread_exit_slot& descriptor_slot() {
  static thread_exit_slot slot(&release_descriptor);
  return slot;
}

std::uintptr_t location_bits(const std::source_location& l) noexcept {
  std::uintptr_t b;
  std::memcpy(&b, &l, sizeof b);
  return b;
}
std::source_location location_from(std::uintptr_t b) noexcept {
  std::source_location l;
  if (b) std::memcpy(static_cast<void*>(&l), &b, sizeof b);  // trivially copyable: one pointer
  return l;
}

void wake_retry_waiters() noexcept {
  if (retry_waiters.load(std::memory_order_relaxed) == 0) return;
  commit_signal.fetch_add(1, std::memory_order_release);
  ::syscall(SYS_futex, &commit_signal, FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
}

}  // namespace

// --- tvar_base -------------------------------------------------------------------------------------

void tvar_base::wait_unlocked() const noexcept {
  for (unsigned spins = 0; meta.load(std::memory_order_acquire) & lock_bit; ++spins) {
    relax(spins, 64);  // the lock holder may have been preempted
  }
}

void tvar_base::write_direct(std::uint64_t b, void (*drop)(void*), const std::source_location& where) {
  // A direct write is a transaction of one write: its thread registers, so that no other thread
  // runs solo (lock-free) transactions while it writes.
  (void)thread_transaction();
  const outside_write_scope outside(nullptr, this);
  // Lock (waiting out committers and the inevitable transaction's reservation).
  std::uint64_t m;
  for (unsigned spins = 0;; ++spins) {
    m = meta.load(std::memory_order_relaxed);
    if (!(m & (lock_bit | reserved_bit)) &&
        meta.compare_exchange_weak(m, reinterpret_cast<std::uint64_t>(this) | lock_bit, std::memory_order_seq_cst,
                                   std::memory_order_relaxed)) {
      if (!exclusive_elsewhere(current_tx)) break;
      meta.store(m, std::memory_order_release);  // an exclusive inevitable transaction runs: after it
      wait_for_exclusive(current_tx);
      continue;
    }
    relax(spins, 64);
  }
  std::uint64_t old = bits.load(std::memory_order_relaxed);
  bits.store(b, std::memory_order_release);  // pairs with the readers' acquire (a load or a fence)
  if (observing()) [[unlikely]]
    note_write(this, location_bits(where));
  const std::uint64_t wv = clock.value.load(std::memory_order_seq_cst) + 1;  // after the lock (seq_cst CAS)
  meta.store(wv << 2, std::memory_order_release);  // unlock; pairs with the readers' acquire load
  if (drop) epoch_retire(reinterpret_cast<void*>(old), drop);
  wake_retry_waiters();
}

void tvar_base::destroy_shared(void (*drop)(void*)) noexcept {
  // Marked changed (a doomed reader re-validates and aborts; a retry() waiter wakes), counted, then
  // the box is retired: a reader still inside its epoch critical section may hold it.
  wait_unlocked();
  const std::uint64_t wv = clock.value.load(std::memory_order_seq_cst) + 1;
  meta.store(wv << 2, std::memory_order_release);
  tvars_destroyed.fetch_add(1, std::memory_order_seq_cst);
  if (drop) epoch_retire(reinterpret_cast<void*>(bits.load(std::memory_order_relaxed)), drop);
  forget();
  wake_retry_waiters();
}

// --- descriptor -------------------------------------------------------------------------------------

transaction::transaction() : thread(std::this_thread::get_id()) {
  link_tx_alloc();
  link_profiler();
}
transaction::~transaction() = default;

__attribute__((tls_model("initial-exec"))) constinit thread_local transaction* thread_tx = nullptr;

transaction& make_thread_transaction() {
  auto* tx = new transaction;
  bool someone_solo, run_alone;
  {
    std::lock_guard lock(registry_lock);
    // A thread of an ordered run (its main thread, a worker) belongs to it: see sole_run_begin.
    const auto run_of_thread = thread_run.load(std::memory_order_acquire);
    tx->run.store(run_of_thread ? run_of_thread() : nullptr, std::memory_order_relaxed);
    registry().push_back(tx);
    update_privatization_locked();
    someone_solo = (solo_state.load(std::memory_order_acquire) & solo_active) != 0;
    claim_solo_locked();  // the first thread to use the STM starts solo
    run_alone = sole_run_blocks_locked(tx->run.load(std::memory_order_relaxed));
  }
  if (someone_solo) revoke_solo(tx);  // another thread ran solo: from now on we both run normally
  if (run_alone) revoke_sole_run();   // an ordered run committed without locks: from now on with them
  thread_tx = tx;
  descriptor_slot().arm(tx);
  return *tx;
}

// Solo mode is ours if the current claim is active, not being revoked, and names this descriptor.
[[gnu::always_inline]] inline bool transaction::solo_claimed(std::uint64_t solo) const noexcept {
  return (solo & (solo_active | solo_revoking)) == solo_active && !solo_blocked_ &&
         solo_owner.load(std::memory_order_relaxed) == this;
}

[[gnu::always_inline]] inline void transaction::start_attempt(bool solo, std::uint64_t token) noexcept {
  solo_ = solo;  // a revocation from now on is seen by the reads and the commit
  solo_token_ = token;
  saved_log_ = set_active_alloc_log(&allocs_);
  current_tx = this;
}

void transaction::begin() {
  epoch_ = &epoch_self();  // not kept across transactions: released and recycled at thread exit
  epoch_enter(*epoch_);
  const std::uint64_t solo = solo_state.load(std::memory_order_acquire);
  if (solo_claimed(solo) && !holds_token_ && !observing()) [[likely]] {
    // Solo (the common case of a thread alone): nothing else to prepare.
    measuring_ = inevitable_ = want_inevitable_ = false;
    start_attempt(true, solo);
    return;
  }
  begin_slow(solo);
}

void transaction::begin_slow(std::uint64_t solo) {
  measuring_ = observing();
  if (measuring_) attempt_start_ns_ = now_ns();
  if (solo_claimed(solo)) {
    if (holds_token_) release_token();  // kept from an attempt that aborted while other threads still ran
    inevitable_ = want_inevitable_ = false;
    start_attempt(true, solo);
    return;
  }
  if (want_inevitable_ && !holds_token_) {
    take_token(this);  // before reading anything: this attempt cannot be invalidated
    holds_token_ = true;
  }
  inevitable_ = holds_token_;
  if (inevitable_ && inevitable_reason_ && measuring_) {
    // Inevitable from the start (after K aborts, or become_inevitable() had to start over): the
    // observer hears of it once, here, with the reason.
    event e{event_kind::inevitable, nullptr, inevitable_reason_};
    notify(e);
  }
  inevitable_reason_ = nullptr;
  // The snapshot starts at the last clock value this thread saw, not at a fresh load of the shared
  // clock (whose line moves to every committer): a tvar written since has a newer version, and the
  // read barrier then extends the snapshot (LSA), so no stale value is ever returned. Transactions
  // that touch nothing recently written never load the clock at all.
  rv_ = last_clock_;
  start_attempt(false, 0);
}

// A solo read found solo mode revoked: the value may come from the new thread's commits.
std::uint64_t transaction::solo_revoked(std::uint64_t b) {
  // Pinned (become_inevitable): the revoker waits for our end before it does anything else, so the
  // value is still one of ours.
  if (solo_pinned_) return b;
  counters::bump(stats.aborts_conflict);
  raise_abort();  // nothing was published; the next attempt runs normally
}

void transaction::raise_abort() {
  if (segment_) {
    // A tasklet segment never unwinds (DESIGN.md §4.3): back to the worker, which restores the stack.
    segment_abort_jump();
    __builtin_unreachable();
  }
  signal_pending_ |= 1;
  throw tx_abort_signal{};
}

void transaction::raise_retry() {
  signal_pending_ |= 2;
  throw tx_retry_signal{};
}

// commit() found a signal that never reached atomically(): user code caught it and went on. The
// attempt saw a conflict (or asked to wait), so what it did after cannot be committed.
void transaction::signal_swallowed() {
  const bool was_retry = signal_pending_ == 2;  // a conflict swallowed too is reported as one
  signal_pending_ = 0;
  throw std::logic_error(was_retry ? "weft::atomically: a retry signal was caught inside a transaction (a catch (...) "
                                     "in the transaction must rethrow it: weft::retry() cannot return)"
                                   : "weft::atomically: a conflict signal was caught inside a transaction (a catch "
                                     "(...) in the transaction must rethrow it: the attempt cannot commit)");
}

[[gnu::always_inline]] inline void transaction::clear_attempt() noexcept {
  solo_ = false;
  reads_.size = 0;
  writes_.size = 0;
  undo_.size = 0;
  scope_depth_ = 0;
  view_depth_ = 0;
  or_else_depth_ = 0;
  created_floor_ = 0;
  signal_pending_ = 0;
  if (index_.size) [[unlikely]] {
    // The next indexed attempt starts at the size this one's log needed (a re-run of the same segment
    // or transaction: no rebuild as its log grows); a small one after a big one shrinks it again.
    index_hint_ = index_count_;
    index_.size = 0;
  }
}

[[gnu::always_inline]] inline void transaction::reset_attempt() noexcept {
  clear_attempt();
  current_tx = nullptr;
  set_active_alloc_log(saved_log_);
  epoch_exit(*epoch_);
}

bool transaction::reads_valid(std::uint64_t rv, const read_entry** failed) const noexcept {
  const std::uint64_t self = reinterpret_cast<std::uint64_t>(this) | lock_bit;
  for (std::uint32_t i = 0; i < reads_.size; ++i) {
    const read_entry& r = reads_.data[i];
    std::uint64_t m = speculative_load(r.var->meta, std::memory_order_seq_cst);  // after the clock load
    if (m & lock_bit) {
      if (m != self) {
        *failed = &r;
        return false;
      }
      // Locked by us at commit: judge by the version it had when we locked it. Unless one of the
      // tvars we locked was newer than rv_ (rare: a blind write), none was: no lookup needed.
      if (!stale_write_locked_) continue;
      const write_entry* w = find_write(r.var);
      if (!w || version_of(w->old_meta) > rv) {
        *failed = &r;
        return false;
      }
    } else if (version_of(m) > rv) {
      *failed = &r;
      return false;
    }
  }
  return true;
}

bool transaction::segment_reads_valid() const noexcept {
  const read_entry* failed = nullptr;
  return reads_valid(rv_, &failed);
}

void transaction::reads_full() {
  if (segment_ && allocs_.stop_requested())
    if (auto hook = alloc_log_stop_hook.load(std::memory_order_relaxed)) hook();  // may leave the attempt
  reads_.grow();
}

bool transaction::extend(std::uint64_t seen) noexcept {
  // Advance the clock to the version we met (it is at most clock + 1), then take it as our snapshot.
  std::uint64_t now = clock.value.load(std::memory_order_seq_cst);
  while (now < seen && !clock.value.compare_exchange_weak(now, seen, std::memory_order_seq_cst)) {
  }
  if (now < seen) now = seen;  // our CAS put it there
  const read_entry* failed = nullptr;
  if (!reads_valid(rv_, &failed)) return false;
  rv_ = last_clock_ = now;
  counters::bump(stats.extensions);
  return true;
}

// The time an aborted attempt cost: a segment's time running (round 17's check: counted from its
// start to its abort, a finished segment's wait for its turn made "time lost" exceed all the time
// spent in segments), a plain transaction's from its start.
std::uint64_t transaction::attempt_ns() const noexcept {
  if (!segment_) return now_ns() - attempt_start_ns_;
  return ran_ns_ + (run_since_ns_ ? now_ns() - run_since_ns_ : 0);
}

void transaction::record_conflict(conflict_kind kind, const tvar_base* v, const std::source_location& where) noexcept {
  if (!measuring_) return;
  conflict_record rec{kind,
                      v,
                      v ? tvar_name(v) : nullptr,
                      where,
                      v ? location_from(last_write_of(v)) : std::source_location{},
                      attempt_ns(),
                      std::this_thread::get_id()};
  event e{event_kind::tx_abort, &rec};
  notify(e);
}

void transaction::abort_conflict(conflict_kind kind, const tvar_base* v, const std::source_location& where) {
  switch (kind) {
    case conflict_kind::read_write: counters::bump(stats.aborts_conflict); break;
    case conflict_kind::write_write: counters::bump(stats.aborts_locked); break;
    case conflict_kind::inevitable: counters::bump(stats.aborts_inevitable); break;
  }
  record_conflict(kind, v, where);
  raise_abort();
}

std::uint64_t transaction::read_slow(const tvar_base& v, const std::source_location& where) {
  if (exclusive_) return read_exclusive(v);
  if (inevitable_) {
    reserve(v);  // now nobody can change it until we commit
    return v.bits.load(std::memory_order_acquire);
  }
  for (unsigned spins = 0;; ++spins) {
    std::uint64_t m1 = speculative_load(v.meta, std::memory_order_seq_cst);  // after the clock load of rv_
    if (m1 & lock_bit) {  // a committer is writing it back: wait, it is quick
      // A lock held this long may be no committer's: an attempt whose snapshot is already stale can
      // reach memory that is no tvar any more (a tvar on a tasklet's stack, found through a registry
      // before its tasklet ended, the stack since reused: a return address there looks locked) and
      // would wait for ever. Such an attempt's read set is no longer valid: it aborts here.
      if ((spins & 1023) == 1023) {
        const read_entry* failed = nullptr;
        if (!reads_valid(rv_, &failed)) abort_conflict(conflict_kind::read_write, failed->var, failed->where);
      }
      relax(spins, 128);
      continue;
    }
    std::uint64_t b = speculative_load(v.bits, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (speculative_load(v.meta, std::memory_order_relaxed) != m1) continue;
    if (version_of(m1) > rv_) {
      // Newer than our snapshot: extend the snapshot if everything read so far is still current.
      if (!extend(version_of(m1))) {
        const read_entry* failed = nullptr;
        reads_valid(rv_, &failed);
        if (failed) abort_conflict(conflict_kind::read_write, failed->var, failed->where);
        abort_conflict(conflict_kind::read_write, &v, where);
      }
      continue;
    }
    reads_.push({&v, where});
    return b;
  }
}

// No log: nobody commits while we hold exclusive_holder, except a committer that locked before our
// store and is finishing its write-back (wait it out; the seqlock check catches one in between).
std::uint64_t transaction::read_exclusive(const tvar_base& v) noexcept {
  for (unsigned spins = 0;; ++spins) {
    const std::uint64_t m1 = v.meta.load(std::memory_order_seq_cst);  // after our exclusive_holder store
    if (!(m1 & lock_bit)) {
      const std::uint64_t b = v.bits.load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (v.meta.load(std::memory_order_relaxed) == m1) return b;
    }
    relax(spins, 128);
  }
}

void transaction::release_token() noexcept {
  if (exclusive_) {
    exclusive_holder.store(nullptr, std::memory_order_release);
    exclusive_ = false;
  }
  inevitable_holder.store(nullptr, std::memory_order_release);
  holds_token_ = false;
}

void transaction::reserve(const tvar_base& v) {
  auto& meta = const_cast<tvar_base&>(v).meta;
  for (unsigned spins = 0;; ++spins) {
    std::uint64_t m = meta.load(std::memory_order_acquire);
    if (m & lock_bit) {
      relax(spins, 128);
      continue;
    }
    if (m & reserved_bit) return;  // ours: only the token holder reserves
    if (meta.compare_exchange_weak(m, m | reserved_bit, std::memory_order_acq_rel)) {
      reserved_.push(&v);
      return;
    }
  }
}

void transaction::release_reservations() noexcept {
  for (const tvar_base* v : reserved_)
    const_cast<tvar_base*>(v)->meta.fetch_and(~reserved_bit, std::memory_order_release);
  reserved_.size = 0;
}

void transaction::make_inevitable(const char* reason) {
  if (inevitable_ || solo_pinned_) return;
  if (solo_) {
    // Alone in the STM: nothing else has committed since the attempt began, so what it read is
    // current, and stays so if solo mode cannot be revoked before the attempt ends. Pin it as the
    // write-back does (in_solo, the light side of the fence, then the state): a thread that starts
    // using the STM meanwhile waits until this transaction has committed or rolled back, as beside
    // libitm's serial-irrevocable mode. Starting over instead (the multi-thread path, which needs a
    // read log to reserve) ran the block's code before the call twice — its nested blocks' on_abort
    // hooks too — with one worker, and once in ordered mode, where the segment waits for the head.
    in_solo.store(true, std::memory_order_relaxed);
    asymmetric_fence_light();  // pairs with the revoker's heavy fence
    if (solo_state.load(std::memory_order_acquire) == solo_token_) {
      solo_pinned_ = true;
      if (observing()) {
        event e{event_kind::inevitable, nullptr, reason};
        notify(e);
      }
      return;
    }
    in_solo.store(false, std::memory_order_release);
    // Being revoked: start over on the multi-thread path, inevitable from the beginning (nothing
    // was published).
    want_inevitable_ = solo_blocked_ = true;
    inevitable_reason_ = reason;
    counters::bump(stats.aborts_inevitable);
    raise_abort();
  }
  transaction* expected = nullptr;
  if (!inevitable_holder.compare_exchange_strong(expected, this, std::memory_order_acquire)) {
    // Someone else is inevitable: start over, waiting for the token first.
    want_inevitable_ = true;
    inevitable_reason_ = reason;
    abort_conflict(conflict_kind::inevitable, nullptr, std::source_location::current());
  }
  holds_token_ = true;
  // Everything read so far must still be current, and must stay so: reserve it.
  for (std::uint32_t i = 0; i < reads_.size; ++i) {
    const tvar_base& v = *reads_.data[i].var;
    reserve(v);
    if (version_of(v.meta.load(std::memory_order_acquire)) > rv_) {
      want_inevitable_ = true;  // keep the token; the next attempt starts inevitable
      inevitable_reason_ = reason;
      abort_conflict(conflict_kind::read_write, &v, reads_.data[i].where);
    }
  }
  for (std::uint32_t i = 0; i < writes_.size; ++i) reserve(*writes_.data[i].var);
  inevitable_ = true;
  inevitable_reason_ = nullptr;
  event e{event_kind::inevitable, nullptr, reason};
  notify(e);
}

void transaction::release_locks(std::uint32_t count) noexcept {
  for (std::uint32_t i = 0; i < count; ++i)
    writes_.data[i].var->meta.store(writes_.data[i].old_meta, std::memory_order_release);
}

// Stores the new values; each entry then holds the value it replaced. True if a box was replaced.
[[gnu::always_inline]] inline bool transaction::install_writes() noexcept {
  bool boxes = false;
  for (write_entry& w : writes_) {
    const std::uint64_t old = w.var->bits.load(std::memory_order_relaxed);
    // release: the value (a new box, say) is published by this store itself in solo mode, where
    // no version store follows (free on x86; what lets TSan, which ignores fences, see it).
    w.var->bits.store(w.bits, std::memory_order_release);
    w.bits = old;
    boxes |= w.drop != nullptr;
    if (measuring_) [[unlikely]]
      note_write(w.var, location_bits(w.where));
  }
  return boxes;
}

// With every written tvar locked by us: install the new values, retire replaced boxes, and unlock
// each with version wv.
void transaction::write_back_and_unlock(std::uint64_t wv) noexcept {
  install_writes();
  for (write_entry& w : writes_) w.var->meta.store(wv << 2, std::memory_order_release);
  retire_replaced();
}

// Replaced boxes go to the epoch GC only after the locks are released: a collection may call the
// observer, which must never run while we hold tvar locks.
void transaction::retire_replaced() noexcept {
  for (write_entry& w : writes_)
    if (w.drop) epoch_retire(reinterpret_cast<void*>(w.bits), w.drop, false);  // collected after the commit
  writes_.size = 0;  // the entries no longer describe this transaction's writes
}

bool transaction::commit_solo() {
  if (solo_pinned_) [[unlikely]] {
    // Made inevitable: solo mode is still ours (a revoker waits for in_solo), no check needed.
    solo_pinned_ = false;
    counters::bump(stats.inevitable);
    if (writes_.size == 0) counters::bump(stats.read_only_commits);
  } else {
    if (writes_.size == 0) {
      // Every read was checked against a revocation: the snapshot is consistent.
      counters::bump(stats.read_only_commits);
      counters::bump(stats.solo);
      return true;
    }
    // Pin solo mode for the write-back: a revoker now waits until in_solo drops.
    in_solo.store(true, std::memory_order_relaxed);
    asymmetric_fence_light();  // pairs with the revoker's heavy fence
    if (solo_state.load(std::memory_order_acquire) != solo_token_) {
      in_solo.store(false, std::memory_order_release);
      counters::bump(stats.aborts_validation);  // revoked: nothing published, run again normally
      return false;
    }
  }
  const bool boxes = install_writes();
  in_solo.store(false, std::memory_order_release);  // a revoker may go on; it sees all we wrote
  if (boxes)
    retire_replaced();  // may run the observer (gc event): not while a revoker waits
  else
    writes_.size = 0;
  counters::bump(stats.solo);
  return true;
}

void transaction::unpin_solo() noexcept {
  solo_pinned_ = false;
  in_solo.store(false, std::memory_order_release);
}

bool transaction::commit_inevitable() {
  // Every written tvar is reserved by us, so nobody else can hold its lock: take them all. Exclusive:
  // a committer that took a lock before our exclusive_holder store may still hold it (it finishes
  // without waiting), and one that takes a lock after lets it go at once: CAS, waiting them out.
  const outside_write_scope outside(segment_ || writes_.size == 0 ? nullptr : this, nullptr);
  const std::uint64_t self = reinterpret_cast<std::uint64_t>(this) | lock_bit;
  for (write_entry& w : writes_) {
    std::uint64_t m = w.var->meta.load(std::memory_order_relaxed);
    if (exclusive_) {
      for (unsigned spins = 0; (m & lock_bit) || !w.var->meta.compare_exchange_weak(m, self, std::memory_order_seq_cst,
                                                                                   std::memory_order_relaxed);
           ++spins) {
        relax(spins, 64);
        m = w.var->meta.load(std::memory_order_relaxed);
      }
      w.old_meta = m;
      continue;
    }
    w.old_meta = m;
    w.var->meta.store(self, std::memory_order_relaxed);
  }
  std::atomic_thread_fence(std::memory_order_release);
  std::uint64_t wv = 0;
  if (writes_.size) {
    std::atomic_thread_fence(std::memory_order_seq_cst);  // the locks before the clock load
    const std::uint64_t now = clock.value.load(std::memory_order_seq_cst);
    if (now > last_clock_) last_clock_ = now;
    wv = now + 1;
  }
  write_back_and_unlock(wv);  // also clears our reservations of the written tvars
  release_reservations();
  release_token();
  want_inevitable_ = inevitable_ = false;
  counters::bump(stats.inevitable);
  if (wv) wake_retry_waiters();
  return true;
}

// A segment's commit while its run is the only writer (sole_run_committing raised, the claim
// checked): no other committer can lock or change a tvar until the flag drops, and the run's own
// commits are serialised, so its reads are validated once and its writes are marked locked with
// plain stores. Returns with the flag down.
bool transaction::commit_sole_run() {
  if (writes_.size > 1)
    for (const write_entry& w : writes_) prefetch_for_write(&w.var->meta);
  stale_write_locked_ = false;
  const read_entry* failed = nullptr;
  if (reads_.size && !reads_valid(rv_, &failed)) {
    sole_run_committing.store(false, std::memory_order_release);
    counters::bump(stats.aborts_validation);
    record_conflict(conflict_kind::read_write, failed->var, failed->where);
    return false;
  }
  const std::uint64_t self = reinterpret_cast<std::uint64_t>(this) | lock_bit;
  for (std::uint32_t i = 0; i < writes_.size; ++i) {
    write_entry& w = writes_.data[i];
    const std::uint64_t m = w.var->meta.load(std::memory_order_relaxed);
    if (m & (lock_bit | reserved_bit)) [[unlikely]] {
      // Nothing of ours can hold it (main's transactions and the run's commits are over); whatever
      // it is, the commit with locks deals with it.
      release_locks(i);
      sole_run_committing.store(false, std::memory_order_release);
      return commit_locked();
    }
    w.old_meta = m;
    w.var->meta.store(self, std::memory_order_relaxed);
  }
  // The marks are visible before the clock is read (a reader whose snapshot is not older than our
  // version then sees them or the new values: the lazy clock's rule), and before the data.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const std::uint64_t now = clock.value.load(std::memory_order_seq_cst);
  install_writes();
  for (write_entry& w : writes_) w.var->meta.store((now + 1) << 2, std::memory_order_release);
  counters::bump(stats.sole_run);  // (before the flag drops: a revoker then sees it counted)
  sole_run_committing.store(false, std::memory_order_release);
  retire_replaced();  // may run the observer: not while a revoker waits
  if (now > last_clock_) last_clock_ = now;
  wake_retry_waiters();
  return true;
}

bool transaction::commit() {
  if (signal_pending_) [[unlikely]]
    signal_swallowed();
  if (solo_) return commit_solo();
  if (inevitable_) return commit_inevitable();
  if (segment_ && writes_.size) {
    // Sole run (see claim_sole_run_locked): checked after raising the flag a revoker waits for.
    const std::uint64_t s = sole_run_state.load(std::memory_order_acquire);
    const void* const own = run.load(std::memory_order_relaxed);
    if ((s & (sole_run_active | sole_run_revoking)) == sole_run_active && own &&
        sole_run_owner.load(std::memory_order_relaxed) == own) {
      sole_run_committing.store(true, std::memory_order_relaxed);
      asymmetric_fence_light();  // pairs with the revoker's heavy fence
      if (sole_run_state.load(std::memory_order_acquire) == s) return commit_sole_run();
      sole_run_committing.store(false, std::memory_order_release);
    }
  }
  return commit_locked();
}

bool transaction::commit_locked() {
  // The lock words we are about to CAS, fetched for writing all at once: a locked CAS waits for its
  // line, so without this each written tvar not in our cache (a big data set; one read on another
  // core) is one miss after another under the commit (bank: 97% of commit()'s time at 2 workers).
  if (writes_.size > 1)
    for (const write_entry& w : writes_) prefetch_for_write(&w.var->meta);
  // A segment validates first, whatever it wrote. It commits after everything committed since it
  // started, so what it read must still be current (a plain read-only transaction may serialise at
  // rv_ instead: consistent there by construction, opacity). And one whose snapshot is stale may
  // hold a tvar that is gone: on the stack of a tasklet that has ended since (found through a
  // registry), the memory reused by another tasklet's frames. Locking it would store into those
  // frames (and a word there that looks reserved made the commit wait for ever: a newcomer's
  // program, every run at 2 workers with the guard off). Valid here, at the head of the ordered run
  // (segment commits are serialised by the commit lock), every tvar it writes is still alive. Heap
  // tvars need no such care: their memory is reclaimed through the epoch GC.
  if (segment_ && reads_.size) {
    const read_entry* failed = nullptr;
    if (!reads_valid(rv_, &failed)) {
      counters::bump(stats.aborts_validation);
      record_conflict(conflict_kind::read_write, failed->var, failed->where);
      return false;
    }
  }
  if (writes_.size == 0) {
    counters::bump(stats.read_only_commits);
    return true;
  }
  const outside_write_scope outside(segment_ ? nullptr : this, nullptr);
  const std::uint64_t self = reinterpret_cast<std::uint64_t>(this) | lock_bit;
relock:
  stale_write_locked_ = false;
  for (std::uint32_t i = 0; i < writes_.size; ++i) {
    write_entry& w = writes_.data[i];
    for (unsigned spins = 0;; ++spins) {
      std::uint64_t m = w.var->meta.load(std::memory_order_relaxed);
      if (m & reserved_bit) {
        // The inevitable transaction uses it: let go of everything and wait for it to finish.
        release_locks(i);
        while (w.var->meta.load(std::memory_order_acquire) & reserved_bit) std::this_thread::yield();
        goto relock;
      }
      if (m & lock_bit) {
        if (spins < 256) {
          cpu_relax();
          continue;
        }
        release_locks(i);
        counters::bump(stats.aborts_locked);
        record_conflict(conflict_kind::write_write, w.var, w.where);
        return false;
      }
      if (w.var->meta.compare_exchange_weak(m, self, std::memory_order_seq_cst, std::memory_order_relaxed)) {
        w.old_meta = m;
        stale_write_locked_ |= version_of(m) > rv_;
        counters::bump(stats.locks_acquired);
        break;
      }
    }
  }
  if (exclusive_elsewhere(this)) [[unlikely]] {
    release_locks(writes_.size);
    wait_for_exclusive(this);
    goto relock;
  }
  std::atomic_thread_fence(std::memory_order_release);  // locks before data; pairs with readers' fence
  // Lazy clock: our version is one past the clock, loaded after every lock is held (seq_cst CAS,
  // seq_cst load). Other commits may get the same version, so the reads are always validated.
  const std::uint64_t now = clock.value.load(std::memory_order_seq_cst);
  const read_entry* failed = nullptr;
  if (reads_.size && !reads_valid(rv_, &failed)) {
    release_locks(writes_.size);
    counters::bump(stats.aborts_validation);
    record_conflict(conflict_kind::read_write, failed->var, failed->where);
    return false;
  }
  write_back_and_unlock(now + 1);
  if (now > last_clock_) last_clock_ = now;
  wake_retry_waiters();
  return true;
}

void transaction::tvar_created(tvar_base* v, void (*drop)(void*)) { created_.push({v, drop}); }

void transaction::tvar_destroyed(tvar_base* v, void (*drop)(void*)) {
  for (std::uint32_t i = created_.size; i-- > created_floor_;) {
    if (created_.data[i].var == v) {
      // Made in this attempt, in the innermost scope: nobody else ever saw it and no rollback can
      // bring it back. Its storage may be freed as soon as we return, so nothing in the logs may
      // point to it any more.
      alloc_log_stop_hold hold(allocs_);  // (see replace_write)
      forget_logged(v);
      if (drop) drop(reinterpret_cast<void*>(v->bits.load(std::memory_order_relaxed)));
      v->forget();
      created_.data[i].var = nullptr;
      return;
    }
  }
  // The same holds for a tvar inside an exception object the C++ runtime is destroying: its storage
  // is freed with free() when the destructor returns (a tvar in a caught exception that outlived a
  // switch point: the commit wrote its destroyed mark into freed memory, ASan, every run).
  if ((segment_ && v >= stack_lo_ && v < stack_hi_) || exception_storage_dying) [[unlikely]] {
    // A local of the segment's tasklet going out of scope. Its bytes belong to the tasklet's next
    // frames from now on, while the segment waits for its commit: the commit must not write the
    // destroyed mark, our buffered write or read its box there (it corrupted the suspended
    // tasklet's locals), and validation cannot read it. So what it read of it is validated now, and
    // its entries go.
    // It was made before this attempt, so other tasklets may hold its address (agents on their
    // tasklets' stacks in a registry, a parent's local its children update) and use it, in serial
    // order, before this segment; once our next frames overwrite its bytes they would find garbage
    // (a return address there looked like a held lock, and a predecessor waited for it for ever: a
    // newcomer's program, every run at 2 workers with the guard off). So the segment first waits
    // for its turn: at the head every predecessor has committed, and a successor that still reaches
    // the tvar through a lookup made before our commit is doomed by it (read_slow and commit see to
    // it that such a successor aborts).
    if (segment_ && !inevitable_) segment_park_for_head();
    for (std::uint32_t i = 0; i < reads_.size; ++i) {
      if (reads_.data[i].var != v) continue;
      const std::uint64_t m = v->meta.load(std::memory_order_acquire);
      if ((m & lock_bit) || version_of(m) > rv_) abort_conflict(conflict_kind::read_write, v, reads_.data[i].where);
    }
    {
      alloc_log_stop_hold hold(allocs_);
      forget_logged(v);
    }
    destroyed_.push({v, drop, true, v->bits.load(std::memory_order_relaxed)});
    return;
  }
  // Older (or made before the innermost scope, which may still roll back): the destruction happens
  // at commit. Its storage is still there until then (a delete of it is deferred).
  destroyed_.push({v, drop});
}

// Drops the read and reservation entries of tvars inside `freed` (memory a rollback is about to
// free; their write entries came after the rollback's mark and are gone already). One pass each.
void transaction::forget_logged_in(const alloc_log::ranges& freed) noexcept {
  reads_.remove_if([&](const read_entry& r) { return freed.contains(r.var); });
  reserved_.remove_if([&](const tvar_base* r) { return freed.contains(r); });
}

// Drops every log entry of v (read, write and its pending boxes, undo, reservation).
void transaction::forget_logged(const tvar_base* v) noexcept {
  reads_.remove_if([&](const read_entry& r) { return r.var == v; });
  reserved_.remove_if([&](const tvar_base* r) { return r == v; });
  const write_entry* w = find_write(v);
  if (!w) return;
  const auto gone = static_cast<std::uint32_t>(w - writes_.data);
  if (w->drop) w->drop(reinterpret_cast<void*>(w->bits));
  std::uint32_t k = 0;
  for (std::uint32_t i = 0; i < undo_.size; ++i) {
    undo_entry u = undo_.data[i];
    if (u.index == gone) {
      if (w->drop) w->drop(reinterpret_cast<void*>(u.bits));
      continue;
    }
    if (u.index > gone) --u.index;
    undo_.data[k++] = u;
  }
  undo_.size = k;
  for (std::uint32_t i = gone + 1; i < writes_.size; ++i) writes_.data[i - 1] = writes_.data[i];
  --writes_.size;
  if (index_.size) reindex();
}

// The commit made the destructions real: boxes go to the epoch GC (readers may still hold them), names
// and last-writer entries go from the side tables. Tvars made in the attempt simply live on.
void transaction::finish_destroyed_tvars() noexcept {
  if (destroyed_.size) {
    // Marked changed and counted before their boxes (and, in allocs_.commit(), their storage) are
    // retired: see tvars_destroyed.
    const std::uint64_t wv = clock.value.load(std::memory_order_seq_cst) + 1;
    for (const tvar_entry& d : destroyed_)
      if (!d.dead_storage) d.var->meta.store(wv << 2, std::memory_order_release);
    tvars_destroyed.fetch_add(1, std::memory_order_seq_cst);
    wake_retry_waiters();
  }
  for (const tvar_entry& d : destroyed_) {
    const std::uint64_t box = d.dead_storage ? d.bits : d.var->bits.load(std::memory_order_relaxed);
    if (d.drop) epoch_retire(reinterpret_cast<void*>(box), d.drop, false);
    if (side_tables_used.load(std::memory_order_relaxed)) [[unlikely]]
      tvar_gone(d.var);  // by address only (tvar_base::forget; the storage may be gone)
  }
  destroyed_.size = 0;
  created_.size = 0;
}

// Tvars made in the attempt (from entry `first` on) that still exist, when the attempt (or scope)
// is rolled back and its allocations after `allocs` freed: a tvar inside one of them goes with it
// (its box is freed). Any other keeps living as constructed, holding its initial value: C++ will
// not construct it again (a function-local static, an object placed in storage the attempt did not
// allocate), so it must stay a valid tvar.
void transaction::drop_created_from(std::uint32_t first, std::size_t allocs) noexcept {
  if (first == created_.size) return;
  alloc_log::ranges freed = allocs_.ranges_after(allocs);
  forget_logged_in(freed);  // reads and reservations of those tvars may outlive the rollback (a scope)
  for (std::uint32_t i = first; i < created_.size; ++i) {
    const tvar_entry& c = created_.data[i];
    if (!c.var || !freed.contains(c.var)) continue;
    if (c.drop) c.drop(reinterpret_cast<void*>(c.var->bits.load(std::memory_order_relaxed)));
    c.var->forget();
  }
  created_.size = first;
}

// Tvars the attempt made on its tasklet's stack, when the segment is rolled back without unwinding:
// the restore puts back the stack from before they were made (or the tasklet starts again) and
// their constructors run again, so their first boxes go now, while their storage still holds them.
// (drop_created_from keeps tvars outside freed memory alive: a scope rolled back by an exception
// has unwound its frames, and destroyed its locals, already.)
void transaction::drop_created_within(const void* p, std::size_t n) noexcept {
  const auto lo = reinterpret_cast<std::uintptr_t>(p);
  for (std::uint32_t i = 0; i < created_.size; ++i) {
    tvar_entry& c = created_.data[i];
    if (!c.var || reinterpret_cast<std::uintptr_t>(c.var) - lo >= n) continue;
    if (c.drop) c.drop(reinterpret_cast<void*>(c.var->bits.load(std::memory_order_relaxed)));
    c.var->forget();
    c.var = nullptr;
  }
}

void transaction::drop_created_on_stack() noexcept {
  for (std::uint32_t i = 0; i < created_.size; ++i) {
    tvar_entry& c = created_.data[i];
    if (!c.var || c.var < stack_lo_ || c.var >= stack_hi_) continue;
    if (c.drop) c.drop(reinterpret_cast<void*>(c.var->bits.load(std::memory_order_relaxed)));
    c.var->forget();
    c.var = nullptr;
  }
}

void transaction::after_commit() {
  counters::bump(stats.commits);
  if (destroyed_.size || created_.size) [[unlikely]]
    finish_destroyed_tvars();
  if (!allocs_.empty()) counters::bump(stats.frees_deferred, allocs_.commit());
  consecutive_aborts_ = 0;
  want_inevitable_ = solo_blocked_ = false;
  reset_attempt();
  // Out of the transaction now: what the commit retired may be collected (deleters may destroy
  // tvars, run destructors, even transactions).
  epoch_collect_if_due();
  if (observing()) {
    event e{event_kind::tx_commit};
    notify(e);
  }
  if (!commit_hooks_.empty() || !abort_hooks_.empty()) {
    {
      // Out of the member first: a destructor of a capture may run a transaction on this thread,
      // whose commit ended here again and destroyed the same hooks (a stack overflow, every run).
      std::vector<std::function<void()>> never_run;
      never_run.swap(abort_hooks_);
    }
    std::vector<std::function<void()>> hooks;
    hooks.swap(commit_hooks_);
    for (auto& h : hooks) h();  // outside the transaction: hooks may start new ones
  }
}

std::vector<std::function<void()>> transaction::discard_attempt(bool free_created) noexcept {
  // Commit hooks made in the attempt are destroyed while the log can still tell which of their
  // memory came from it; abort hooks were copied outside the log and are handed back to be run.
  commit_hooks_.clear();
  std::vector<std::function<void()>> aborts;
  aborts.swap(abort_hooks_);
  for (write_entry& w : writes_)  // boxes nobody else ever saw
    if (w.drop) w.drop(reinterpret_cast<void*>(w.bits));
  for (undo_entry& u : undo_) {
    write_entry& w = writes_.data[u.index];
    if (w.drop) w.drop(reinterpret_cast<void*>(u.bits));
  }
  // Whatever the attempt reserved goes back, inevitable or not: an attempt that failed to become
  // inevitable may hold reservations of what it had read.
  if (reserved_.size) release_reservations();
  if (solo_pinned_) unpin_solo();  // nothing published: a revoker may go on
  if (free_created)
    drop_created_from(0, 0);
  else
    created_.size = 0;  // kept alive with the attempt's allocations (see abort_by_exception)
  destroyed_.size = 0;  // tvars "destroyed" in the attempt are still alive
  return aborts;
}

void transaction::rollback_after_conflict() {
  std::vector<std::function<void()>> aborts = discard_attempt(true);
  const bool keep_token = holds_token_ && want_inevitable_;
  if (holds_token_ && !keep_token) release_token();
  reset_attempt();
  // The on_abort hooks run, and are destroyed, before the attempt's memory is freed: they may hold
  // or read what the attempt made (a std::shared_ptr made in the block: run after the rollback, a
  // hook read the freed object and released into it). What they allocate is theirs, not the
  // attempt's, and what they delete of the attempt's is freed once. The memory is freed also when a
  // hook throws (the exception leaves atomically).
  // (The same shape as rollback_scope's: the hooks go, then the memory, in a destructor.)
  struct finish {
    transaction& tx;
    std::vector<std::function<void()>>& hooks;
    ~finish() {
      {
        alloc_log_release_scope release(tx.allocs_);
        hooks.clear();
      }
      counters::bump(tx.stats.allocations_undone, tx.allocs_.abort());
    }
  };
  {
    const finish done{*this, aborts};
    alloc_log_release_scope release(allocs_);
    for (auto& h : aborts) h();
  }
  if (++consecutive_aborts_ >= inevitable_after.load(std::memory_order_relaxed) && !want_inevitable_) {
    want_inevitable_ = true;
    inevitable_reason_ = "too many aborts in a row (stm_options::inevitable_after)";
  }
  backoff();
}

void transaction::abort_by_exception() noexcept {
  counters::bump(stats.aborts_exception);
  std::vector<std::function<void()>> aborts = discard_attempt(false);
  if (holds_token_) release_token();
  want_inevitable_ = solo_blocked_ = false;
  consecutive_aborts_ = 0;
  allocs_.keep_allocations();  // the exception may refer to memory allocated in the attempt: keep it
  reset_attempt();
  for (auto& h : aborts) {
    try {
      h();
    } catch (...) {
    }
  }
}

void transaction::wait_for_change() {
  if (solo_) {
    // A solo attempt keeps no read set to wait on: roll back and run it again normally, which
    // records its reads and, if it retries again, waits on them.
    counters::bump(stats.retries);
    const std::uint32_t aborts = consecutive_aborts_;
    rollback_after_conflict();
    consecutive_aborts_ = aborts;
    solo_blocked_ = true;
    return;
  }
  // Remember what we read, then roll back (abort hooks run; allocations freed). Tvars in memory the
  // attempt allocated are left out: the rollback frees them (and nobody else could change them).
  std::vector<const tvar_base*> watched;
  {
    alloc_log_pause pause;
    const alloc_log::ranges own = allocs_.ranges_after(0);
    watched.reserve(reads_.size + reserved_.size);
    for (const read_entry& r : reads_)
      if (!own.contains(r.var)) watched.push_back(r.var);
    for (const tvar_base* v : reserved_)  // an inevitable transaction's reads
      if (!own.contains(v)) watched.push_back(v);
  }
  if (watched.empty()) {
    // Nothing (or only what it made itself) was read, so nothing could ever wake us: a program bug.
    abort_by_exception();
    throw std::logic_error("weft::retry(): the transaction read no tvar, so nothing could ever wake it");
  }
  counters::bump(stats.retries);
  const std::uint64_t rv = rv_;
  auto changed = [&] {
    for (const tvar_base* v : watched) {
      std::uint64_t m = v->meta.load(std::memory_order_acquire);
      if ((m & lock_bit) || version_of(m) > rv) return true;
    }
    return false;
  };
  // Still inside the attempt's epoch critical section, so every watched tvar is still allocated:
  // note the destruction count, then check nothing changed. A tvar destroyed from here on is counted
  // after this load; one destroyed before it was marked changed first (the check sees it).
  retry_waiters.fetch_add(1, std::memory_order_seq_cst);
  const std::uint64_t destroyed_at_start = tvars_destroyed.load(std::memory_order_seq_cst);
  const bool changed_already = changed();
  if (observing()) {
    event e{event_kind::tx_retry_wait};
    notify(e);
  }
  const std::uint32_t aborts = consecutive_aborts_;
  const bool was_inevitable = inevitable_;
  rollback_after_conflict();
  consecutive_aborts_ = aborts;  // waiting is not contention
  if (holds_token_) release_token();  // do not keep others from the token while we sleep
  want_inevitable_ = was_inevitable;
  // Out of the attempt (and its epoch). Each check re-enters the epoch and reads the watched tvars
  // only if none was destroyed since we started waiting (one destroyed later can only be freed
  // after we leave the critical section again); after a destruction the transaction simply runs
  // again, as a transaction.
  epoch_slot& epoch = epoch_self();
  auto check = [&] {
    epoch_enter(epoch);
    const bool stop = tvars_destroyed.load(std::memory_order_seq_cst) != destroyed_at_start || changed();
    epoch_exit(epoch);
    return stop;
  };
  for (unsigned spins = 0; !changed_already && !check(); ++spins) {
    if (spins < 64) {
      cpu_relax();
      continue;
    }
    std::uint32_t seen = commit_signal.load(std::memory_order_acquire);
    if (check()) break;
    // Checked once per sleep (a lock), so that the last other thread ending while we wait is seen.
    if (another_thread_may_commit && !another_thread_may_commit()) [[unlikely]] {
      retry_waiters.fetch_sub(1, std::memory_order_relaxed);
      abort_by_exception();
      throw std::logic_error(
          "weft::retry(): nothing could ever wake this transaction: no other thread that may use weft is "
          "alive, and this thread's tasklets do not run while it waits");
    }
    // A wake-up can slip between the check and the sleep (writers do not fence): sleep 1 ms at most.
    timespec timeout{0, 1'000'000};
    ::syscall(SYS_futex, &commit_signal, FUTEX_WAIT_PRIVATE, seen, &timeout, nullptr, 0);
  }
  retry_waiters.fetch_sub(1, std::memory_order_relaxed);
}

void transaction::backoff() noexcept {
  // Randomized exponential backoff: up to 2^min(aborts, 12) pauses.
  rng_ ^= rng_ << 13;
  rng_ ^= rng_ >> 7;
  rng_ ^= rng_ << 17;
  const unsigned shift = consecutive_aborts_ < 12 ? consecutive_aborts_ : 12;
  const std::uint64_t spins = rng_ & ((std::uint64_t{1} << shift) - 1);
  for (std::uint64_t i = 0; i < spins; ++i) cpu_relax();
}

// --- tasklet segments (DESIGN.md §4) ------------------------------------------------------------------


void segment_register(transaction* tx, const void* run) {
  bool someone_solo, run_alone;
  {
    std::lock_guard lock(registry_lock);
    tx->run.store(run, std::memory_order_relaxed);
    tx->segment_record = true;  // (segment_, set at each begin, is the running thread's to read)
    registry().push_back(tx);
    update_privatization_locked();
    someone_solo = (solo_state.load(std::memory_order_acquire) & solo_active) != 0;
    run_alone = sole_run_blocks_locked(run);
    claim_sole_run_locked();
  }
  if (someone_solo) revoke_solo(tx);  // nobody runs solo beside segments
  if (run_alone) revoke_sole_run();   // another run's segments: every run commits with locks
}

void sole_run_begin(const void* run) noexcept {
  std::lock_guard lock(registry_lock);
  if (transaction* own = thread_tx) own->run.store(run, std::memory_order_relaxed);  // the run's main thread
  sole_run_candidate = run;
  claim_sole_run_locked();
}

void sole_run_rejoin(const void* run) noexcept {
  std::lock_guard lock(registry_lock);
  if (transaction* own = thread_tx) own->run.store(run, std::memory_order_relaxed);
  claim_sole_run_locked();
}

void sole_run_end(const void* run) noexcept {
  std::lock_guard lock(registry_lock);
  if (sole_run_candidate == run) sole_run_candidate = nullptr;
  for (transaction* d : registry())
    if (d->run.load(std::memory_order_relaxed) == run) d->run.store(nullptr, std::memory_order_relaxed);
  std::uint64_t s = sole_run_state.load(std::memory_order_acquire);
  // No commit of the run is in flight (the caller's rule). A revoker that marked the state already
  // ends the claim itself.
  if ((s & sole_run_active) && !(s & sole_run_revoking) && sole_run_owner.load(std::memory_order_relaxed) == run)
    sole_run_state.compare_exchange_strong(s, s & ~sole_run_active, std::memory_order_acq_rel);
}

void segment_unregister(transaction* tx) noexcept {
  std::lock_guard lock(registry_lock);
  departed_segments += snapshot(tx->stats);
  std::erase(registry(), tx);
  update_privatization_locked();
  claim_solo_locked();
  claim_sole_run_locked();
}

void transaction::segment_begin(epoch_slot& slot, bool inevitable) {
  segment_ = true;
  solo_ = false;
  measuring_ = observing();
  ran_ns_ = run_since_ns_ = 0;  // (a segment's attempt is timed while it runs: attempt_ns)
  epoch_ = &slot;
  epoch_enter(slot);
  // A fresh snapshot: a pooled descriptor's last clock may be far behind, and every newer read
  // would then extend (and revalidate the read set).
  rv_ = last_clock_ = clock.value.load(std::memory_order_seq_cst);
  inevitable_ = false;
  if (inevitable) {
    take_token(this);
    holds_token_ = inevitable_ = exclusive_ = true;
    exclusive_holder.store(this, std::memory_order_seq_cst);  // before the first read
  }
}

void transaction::segment_attach() noexcept {
  set_active_alloc_log(&allocs_);
  current_tx = this;
  if (measuring_) [[unlikely]]
    run_since_ns_ = now_ns();
}

void transaction::segment_detach() noexcept {
  current_tx = nullptr;
  set_active_alloc_log(nullptr);
  if (measuring_ && run_since_ns_) [[unlikely]] {
    ran_ns_ += now_ns() - run_since_ns_;
    run_since_ns_ = 0;
  }
}

bool transaction::segment_commit() {
  if (signal_pending_) [[unlikely]]
    return false;  // a retry signal caught by user code outside or_else: run it again
  if (inevitable_) {
    return commit_inevitable();
  }
  return commit();
}

std::vector<std::function<void()>> transaction::segment_finish_commit() noexcept {
  counters::bump(stats.commits);
  if (destroyed_.size || created_.size) [[unlikely]]
    finish_destroyed_tvars();
  if (!allocs_.empty()) counters::bump(stats.frees_deferred, allocs_.commit());
  holds_token_ = want_inevitable_ = inevitable_ = false;
  clear_attempt();
  epoch_exit(*epoch_);
  abort_hooks_.clear();
  std::vector<std::function<void()>> hooks;
  hooks.swap(commit_hooks_);
  return hooks;
}

namespace {
// Ends the hooks' lives without their destructors (their memory is the attempt's, freed with it):
// reusing an object's storage ends its life, and nothing here depends on what a destructor does.
void forget_hooks(std::vector<std::function<void()>>& hooks) noexcept {
  for (auto& h : hooks) ::new (static_cast<void*>(&h)) std::function<void()>();
  alloc_log_pause pause;
  hooks.clear();
}
}  // namespace

void transaction::segment_abort(bool quarantine, std::uint64_t tag, alloc_log::ranges* made_while_dropping) noexcept {
  // The hooks the attempt registered never existed (see add_abort_hook; commit hooks are made in the
  // attempt too): no destructor of theirs runs, as none of the attempt's stack objects' does.
  forget_hooks(commit_hooks_);
  forget_hooks(abort_hooks_);
  for (auto& level : running_abort_hooks_) forget_hooks(level);
  // Installed while the attempt's boxes are dropped: memory their values allocated in the attempt
  // is then recognised by `delete` (freed once, not again by the log's rollback).
  alloc_log* const outer = set_active_alloc_log(&allocs_);
  drop_created_on_stack();
  std::vector<std::function<void()>> aborts = discard_attempt(true);
  set_active_alloc_log(outer);
  // No hook is left in it (forgotten above), but it holds abort_hooks_'s buffer, which may be the
  // attempt's: it must not be freed while allocs_ is active (a free there is undone by the rollback
  // below: LeakSanitizer found the leak when this went at the end of discard_attempt's statement).
  {
    alloc_log_release_scope release(allocs_);
    aborts.clear();
  }
  drop_running_abort_hooks();
  if (made_while_dropping) *made_while_dropping = allocs_.ranges_after(0);
  counters::bump(stats.allocations_undone, quarantine ? allocs_.abort_to_quarantine(tag) : allocs_.abort());
  if (holds_token_) release_token();
  inevitable_ = want_inevitable_ = false;
  clear_attempt();
  epoch_exit(*epoch_);
}

bool transaction::segment_make_inevitable() noexcept {
  if (inevitable_) return true;
  take_token(this);
  holds_token_ = exclusive_ = true;
  exclusive_holder.store(this, std::memory_order_seq_cst);  // from now on only our run commits
  // What was read so far must still be current; from here on nothing can change it.
  for (std::uint32_t i = 0; i < reads_.size; ++i) {
    const tvar_base& v = *reads_.data[i].var;
    std::uint64_t m = v.meta.load(std::memory_order_seq_cst);
    for (unsigned spins = 0; m & lock_bit; ++spins) {  // a committer from before our store finishes
      relax(spins, 128);
      m = v.meta.load(std::memory_order_seq_cst);
    }
    if (version_of(m) > rv_) {
      record_conflict(conflict_kind::read_write, &v, reads_.data[i].where);
      counters::bump(stats.aborts_validation);
      return false;  // the caller aborts the segment (segment_abort gives the token back)
    }
  }
  reads_.size = 0;  // validated for good: the commit need not look again
  inevitable_ = true;
  if (measuring_) {
    event e{event_kind::inevitable, nullptr, "the segment needs the head of the ring"};
    notify(e);
  }
  return true;
}

// --- write log -----------------------------------------------------------------------------------

const write_entry* transaction::find_write_indexed(const tvar_base* v, std::uint64_t h) const noexcept {
  const std::uint32_t mask = index_.size - 1;
  for (auto s = static_cast<std::uint32_t>(h >> index_shift_);; s = (s + 1) & mask) {
    const std::uint32_t e = index_.data[s];
    if (e == 0) return nullptr;
    if (writes_.data[e - 1].var == v) return &writes_.data[e - 1];
  }
}

// Sized for twice the log (and at least what the last attempt needed: index_hint_), so that it stays
// at most half full.
void transaction::rebuild_index() {
  std::uint32_t cap = 64;
  while (cap < writes_.size * 2 || cap < index_hint_ * 2) cap *= 2;
  while (index_.cap < cap) index_.grow();
  index_.size = cap;
  index_shift_ = 64 - static_cast<std::uint32_t>(std::countr_zero(cap));
  std::memset(index_.data, 0, cap * sizeof(std::uint32_t));
  std::memset(filter_, 0, sizeof filter_);
  index_count_ = 0;
  for (std::uint32_t i = 0; i < writes_.size; ++i) insert_index(i, write_hash(writes_.data[i].var));
}

// After entries left the log (a scope rolled back, a tvar forgotten). A log back within linear_limit
// goes unindexed: write() indexes only past the limit, and an index missing the entries appended
// below it would hide them from find_write (a rolled-back or_else branch of 9+ writes, then a few
// more: their reads saw the committed values, and the commit dropped the writes they replaced).
void transaction::reindex() {
  if (writes_.size > linear_limit) {
    rebuild_index();
  } else {
    index_hint_ = index_count_;
    index_.size = 0;
  }
}

void transaction::index_write(std::uint32_t i) {
  if (index_.size == 0 || writes_.size * 2 > index_.size) [[unlikely]] {
    try {
      rebuild_index();  // changes nothing before its allocation succeeds
    } catch (...) {
      --writes_.size;  // the write is not made (as when the log itself cannot grow): the index still covers the log
      throw;
    }
    return;
  }
  insert_index(i, write_hash(writes_.data[i].var));
}

void transaction::replace_write(write_entry& w, std::uint64_t b, const std::source_location& where) {
  const auto index = static_cast<std::uint32_t>(&w - writes_.data);
  if (scope_depth_) {
    undo_.push({index, w.bits, w.where});  // or_else may have to put it back
    w.bits = b;
    w.where = where;
    return;
  }
  // The log holds the new box before the old one's value is destroyed (a box nobody else ever saw),
  // with stops held: its destructor must not leave the attempt with the log pointing at either.
  const std::uint64_t old = w.bits;
  w.bits = b;
  w.where = where;
  if (w.drop) {
    alloc_log_stop_hold hold(allocs_);
    w.drop(reinterpret_cast<void*>(old));
  }
}

// --- or_else scopes ------------------------------------------------------------------------------

// The outermost scope closed: the values its replaced writes held (boxes) are nobody's now.
void transaction::drop_undo(const scope_mark& m) noexcept {
  alloc_log_stop_hold hold(allocs_);  // (see replace_write)
  for (std::uint32_t i = m.undo; i < undo_.size; ++i) {
    write_entry& w = writes_.data[undo_.data[i].index];
    if (w.drop) w.drop(reinterpret_cast<void*>(undo_.data[i].bits));
  }
  undo_.size = m.undo;
}

void transaction::rollback_scope(const scope_mark& m, bool keep_allocations) {
  // In a segment the outermost block stands for the transaction one worker would run: rolled back
  // (an exception leaves it), a retry signal user code caught inside it ends with it, as that
  // transaction's abort clears it. Left pending, the segment could never commit.
  const bool segment_outermost = --scope_depth_ == 0 && segment_;
  if (segment_outermost) signal_pending_ = 0;
  // A segment's outermost block left by an exception stands for a transaction of its own with one
  // worker, whose abort by an exception runs the hooks outside any transaction and lets the block's
  // exception go on (an exception from a hook is dropped: abort_by_exception). Propagated here, the
  // hook's exception replaced the block's at two workers (a helper's program printed "F" where one
  // worker printed "E"). Outside any transaction a hook may reach a switch point (send, schedule),
  // which ends the segment: so its hooks run once the scope is undone, from a list of their own,
  // with the segment at the head and inevitable (never rolled back: nothing can leak that list).
  // Run in the middle of the undo, a hook's switch left the undo half done in a transaction the
  // next segment reused (wrong output or a crash 9-10 of 10 runs at two workers, newcomer round 19).
  const bool as_transaction_of_its_own = segment_outermost && keep_allocations;
  if (as_transaction_of_its_own && abort_hooks_.size() > m.abort_hooks && !inevitable_) segment_park_for_head();
  // Until the hooks run, values and hooks are destroyed while the logs still list them: no stop
  // (see replace_write).
  std::optional<alloc_log_stop_hold> hold(std::in_place, allocs_);
  // Writes to tvars first written in the scope go; older entries get their values back.
  for (std::uint32_t i = m.writes; i < writes_.size; ++i)
    if (writes_.data[i].drop) writes_.data[i].drop(reinterpret_cast<void*>(writes_.data[i].bits));
  for (std::uint32_t i = undo_.size; i-- > m.undo;) {
    undo_entry& u = undo_.data[i];
    if (u.index < m.writes) {
      write_entry& w = writes_.data[u.index];
      if (w.drop) w.drop(reinterpret_cast<void*>(w.bits));
      w.bits = u.bits;
      w.where = u.where;
    } else if (writes_.data[u.index].drop) {
      writes_.data[u.index].drop(reinterpret_cast<void*>(u.bits));
    }
  }
  undo_.size = m.undo;
  writes_.size = m.writes;
  if (index_.size) reindex();
  commit_hooks_.resize(m.commit_hooks);
  {
    // The abort hooks are copies made outside the attempt's log (add_abort_hook) and are freed
    // outside it: a free inside it waits for the segment's commit, and a later rollback of the
    // segment lost it (a leak found by LSan in a newcomer's program, on_abort in a nested block).
    // (Commit hooks are moved in: their memory may be the attempt's, recognised by its log.) They
    // are kept in the transaction while they run: a hook's read that dooms a segment leaves it by a
    // jump, without unwinding, and segment_abort drops them (a local list leaked).
    alloc_log_pause pause;
    running_abort_hooks_.emplace_back(std::make_move_iterator(abort_hooks_.begin() + m.abort_hooks),
                                      std::make_move_iterator(abort_hooks_.end()));
    abort_hooks_.resize(m.abort_hooks);
  }
  destroyed_.size = m.destroyed;
  if (!keep_allocations) drop_created_from(m.created, m.allocs.allocs);
  // The hooks run, and are destroyed, before the scope's memory is freed: they may hold or read what
  // it made (a std::shared_ptr made in the block: run after the rollback, a hook read the freed
  // object and released into it). They run in the enclosing attempt: what they allocate and delete
  // is logged after the scope's entries, and stays when those are undone. A delete of the scope's
  // memory frees it at once (the scope's floor still stands). The scope is undone also when a hook
  // throws (a conflict its read found, or its own exception: it propagates from the block).
  struct finish {
    transaction& tx;
    const scope_mark& m;
    bool keep_allocations;
    alloc_log::mark end;
    ~finish() {
      {
        alloc_log_release_scope release(tx.allocs_);  // see drop_running_abort_hooks
        tx.running_abort_hooks_.pop_back();
      }
      if (keep_allocations) {
        // The memory stays (the exception may refer to it), and so do the tvars made in it, with
        // the values they were made with; deletes in the scope did not happen.
        tx.allocs_.drop_frees_between(m.allocs, end);
      } else {
        counters::bump(tx.stats.allocations_undone, tx.allocs_.rollback_between(m.allocs, end));
      }
      tx.allocs_.set_floor(m.alloc_floor);
      tx.created_floor_ = m.created_floor;
    }
  };
  std::vector<std::function<void()>> own_hooks;  // (as_transaction_of_its_own)
  {
    const finish done{*this, m, keep_allocations, allocs_.position()};
    hold.reset();  // the hooks are user code that may loop on what it read: stoppable
    // By index: a hook's own nested blocks may push lists of their own (the vector of lists may move,
    // the hooks in a list do not).
    const std::size_t level = running_abort_hooks_.size() - 1;
    if (as_transaction_of_its_own) {
      alloc_log_pause pause;
      own_hooks.swap(running_abort_hooks_[level]);
    } else {
      for (std::size_t i = 0; i < running_abort_hooks_[level].size(); ++i) running_abort_hooks_[level][i]();
    }
  }
  for (auto& h : own_hooks) {
    try {
      h();
    } catch (const tx_abort_signal&) {
      throw;
    } catch (const tx_retry_signal&) {
      throw;
    } catch (...) {
    }
  }
}

void transaction::drop_running_abort_hooks() noexcept {
  // Destroyed outside the log: they were made outside it, while what they hold of the attempt's
  // memory is freed once now and forgotten by the log (a std::shared_ptr made in the attempt: freed
  // as plain memory, the rollback freed it a second time).
  alloc_log_release_scope release(allocs_);
  running_abort_hooks_.clear();
}

// A segment's outermost block committed: with one worker its transaction's abort hooks are destroyed
// at its commit, never run. So they are here, in the segment's transaction (what their destructors
// write joins it), in order, with stops held (see replace_write).
void transaction::drop_scope_abort_hooks(const scope_mark& m) {
  alloc_log_stop_hold hold(allocs_);
  for (std::size_t i = m.abort_hooks; i < abort_hooks_.size(); ++i) {
    const std::function<void()> gone = std::move(abort_hooks_[i]);
  }
  alloc_log_pause pause;  // (empty now: nothing of the attempt's is freed by the resize)
  abort_hooks_.resize(m.abort_hooks);
}

void transaction::run_scope_commit_hooks(const scope_mark& m) {
  if (!inevitable_) segment_park_for_head();  // back at the head, inevitable (or rolled back: never here)
  std::vector<std::function<void()>> hooks;
  {
    alloc_log_pause pause;  // the hooks were made outside the attempt's log
    hooks.assign(std::make_move_iterator(commit_hooks_.begin() + m.commit_hooks),
                 std::make_move_iterator(commit_hooks_.end()));
    commit_hooks_.resize(m.commit_hooks);
  }
  for (auto& h : hooks) h();
}

void transaction::add_commit_hook(std::function<void()> fn) {
  alloc_log_pause pause;  // the vector's own buffer is ours, not the attempt's
  commit_hooks_.push_back(std::move(fn));
}
void transaction::add_abort_hook(std::function<void()> fn) {
  if (segment_) {
    // In a segment the hook is the attempt's own, like the objects on its tasklet's stack: a copy
    // (as with one worker) made in the attempt's memory, which a rollback of the segment ends
    // without its destructor (segment_abort), as if the attempt had never run. Destroyed there, a
    // captured object's destructor ran once more per rollback: its output and tvar writes differed
    // from one worker's, and a tvar write there, under the commit lock, could wait for ever (round 20).
    std::function<void()> copy(fn);
    alloc_log_pause pause;  // the vector's own buffer is ours, not the attempt's
    abort_hooks_.push_back(std::move(copy));
    return;
  }
  // A copy made outside the log: an abort frees the attempt's allocations before running the abort
  // hooks, so the hooks must not live in them. (`fn` itself is freed with the attempt's memory.)
  alloc_log_pause pause;
  abort_hooks_.push_back(fn);
}

}  // namespace weft::detail

namespace weft {

using namespace detail;

void retry() {
  transaction* tx = current_transaction();
  // (A segment outside every atomically block is no transaction the user opened: the same error as
  // with one worker, where a tasklet there has none.)
  if (!tx || (tx->is_segment() && !tx->in_scope()))
    throw std::logic_error("weft::retry() called outside a transaction");
  // With one worker a tasklet's transaction is no segment, but the rule is the same: waiting there
  // for a tvar to change blocked the thread with every other tasklet of it (for ever, when only
  // they could change it).
  if ((tx->is_segment() || (running_in_tasklet && running_in_tasklet())) && !tx->in_or_else())
    throw std::logic_error("weft::retry() in a tasklet: a tasklet waits on a channel, not on tvars (retry() is "
                           "allowed there only inside or_else's first branch)");
  tx->raise_retry();
}

void on_commit(std::function<void()> fn) {
  transaction* tx = current_transaction();
  if (!tx) {
    fn();
    return;
  }
  if (tx->is_segment() && !tx->in_scope()) {
    // In a tasklet outside atomically: with one worker there is no transaction and fn runs at once.
    // A speculative segment first waits for its turn (irrevocable, like std::exit).
    if (!tx->inevitable()) segment_park_for_head();
    fn();
    return;
  }
  tx->add_commit_hook(std::move(fn));
}

void on_abort(std::function<void()> fn) {
  if (transaction* tx = current_transaction()) tx->add_abort_hook(std::move(fn));
}

void become_inevitable(const char* reason) {
  if (transaction* tx = current_transaction()) {
    if (tx->is_segment()) {
      if (!tx->inevitable()) segment_park_for_head();  // parks until the head; returns inevitable
      return;
    }
    tx->make_inevitable(reason ? reason : "unspecified");
  }
}

stm_counters& stm_counters::operator+=(const stm_counters& o) noexcept {
  for (const auto& field : counter_fields) this->*field.second += o.*field.second;
  return *this;
}

stm_stats stats() {
  stm_stats s;
  std::lock_guard lock(registry_lock);
  stm_counters segments = departed_segments;
  for (transaction* tx : registry()) {
    const stm_counters c = snapshot(tx->stats);
    if (tx->segment_record) {
      segments += c;  // a segment record's descriptor (segment_register), not a thread's own
    } else {
      s.per_thread.push_back({tx->thread, c});
    }
    s.total += c;
  }
  s.per_thread.push_back({std::thread::id(), departed});
  s.total += departed;
  s.per_thread.push_back({std::thread::id(), segments, true});
  s.total += departed_segments;
  return s;
}

void configure_stm(const stm_options& o) {
  if (o.inevitable_after == 0) throw std::invalid_argument("weft::stm_options::inevitable_after must be at least 1");
  if (current_transaction()) throw std::logic_error("weft::configure_stm() called inside a transaction");
  inevitable_after.store(o.inevitable_after, std::memory_order_relaxed);
  solo_setting.set(o.solo);
  sole_run_setting.set(o.sole_run);
  privatization_setting.set(o.privatization_safe);
  {
    std::lock_guard lock(registry_lock);
    update_privatization_locked();
  }
  if (o.solo) {
    std::lock_guard lock(registry_lock);
    claim_solo_locked();
  } else {
    revoke_solo(nullptr);
  }
  if (o.sole_run) {
    std::lock_guard lock(registry_lock);
    claim_sole_run_locked();
  } else {
    revoke_sole_run();
  }
}

}  // namespace weft
