// The per-thread runtime: creation on first use, the switch driver (perform), the first and last
// code of every tasklet (tasklet_entry / exit), retirement of dead tasklets, and shutdown.
//
// perform() is the only place that switches context after applying an intent; tasklet_entry's exit
// path is the only place a tasklet leaves for good. Both run on the owning thread.
#include <typeinfo>
#include <atomic>
#include <limits>
#include <cxxabi.h>
#include <unwind.h>
#include <unordered_set>
#include <mutex>
#include <cstdio>
#include <vector>

#include <unistd.h>

#include <spdlog/spdlog.h>

#include "weft/detail/alloc_log.hpp"
#include "weft/detail/diagnostics.hpp"
#include "weft/log.hpp"
#include "weft/detail/epoch.hpp"
#include "ordered.hpp"
#include "trace.hpp"
#include "runtime.hpp"
#include "weft/detail/stm_core.hpp"
#include "weft/shared.hpp"

namespace weft::detail {

options effective_options();  // options.cpp
void runtime_started();       // options.cpp
void runtime_stopped();       // options.cpp

namespace {

// The main tasklet has no function: its code is whatever the thread runs.
class main_tasklet final : public tasklet_impl {
 public:
  void invoke() override {}
  void drop_function() noexcept override {}
};

// Runtimes whose tasklets refused to die at shutdown: kept reachable (their stacks stay mapped).
// Never destroyed, so that leak checkers running at exit still see them as reachable.
std::mutex abandoned_lock;
auto* const abandoned = new std::vector<runtime*>;

// The thread's reference to its runtime; ending the thread shuts the runtime down.
struct runtime_holder {
  runtime* rt = nullptr;
  ~runtime_holder() {
    if (!rt) return;
    // The process's first thread destroys its thread-local objects only inside exit() (main
    // returned; a call of std::exit went through __wrap_exit already), or at pthread_exit.
    if (::gettid() == ::getpid()) process_exit_begins();
    if (running_tasklet(*rt) == rt->main && !current_transaction()) {
      rt->thread_ending = true;
      try {
        weft::shutdown();
      } catch (...) {
      }
    } else {
      // The thread is ending while a tasklet runs (std::exit from a tasklet), or inside a
      // transaction (std::exit in atomically, which cannot give up the processor): nothing can be
      // unwound. (Trying made each kill fail with "a switch point inside weft::atomically" and end
      // in "refused to die": round 8.)
      detach();
    }
  }
  void detach() noexcept {
    runtime* r = std::exchange(rt, nullptr);
    if (r->ordered) ordered_stop(*r);
    if (!r->ordered) trace_runtime_ended(r->trace_id, {});  // (ordered_stop hands over its spans)
    runtime_stopped();
    runtime_ended(*r);
    if (r->pool && r->pool->in_use() == 0) r->pool.reset();  // dead tasklets' handles may keep r a while
    if (r->alive != 0) {
      std::lock_guard lock(abandoned_lock);
      abandoned->push_back(r);
    }  // tasklets that refused to die: leaked on purpose
    tasklet_impl* m = std::exchange(r->main, nullptr);
    release(m);
    release_runtime(r);
  }
};
__attribute__((tls_model("initial-exec"))) thread_local runtime_holder holder;
constinit thread_local std::uint64_t channels_before_runtime = 0;  // see channel_create


}  // namespace

void refuse_scheduler_op() {
  const char* what = scheduler_ops_refused >= refused_in_dropped_tasklet     ? scheduler_op_in_dropped_tasklet
                     : scheduler_ops_refused >= refused_in_shared_destructor ? scheduler_op_in_shared_destructor
                                                                             : nullptr;
  if (what) {
    std::fprintf(stderr, "weft: %s\n", what);
    std::fflush(stderr);
    throw std::logic_error(what);
  }
  throw std::logic_error(scheduler_op_in_view);
}

namespace {
[[noreturn]] __attribute__((noinline)) void rethrow_pending_other(tasklet_impl* t) {
  std::exception_ptr e = std::move(t->pending);
  t->pending = nullptr;
  note_delivered(e, t);  // for the terminate handler's message, should the throw end the program
  std::rethrow_exception(std::move(e));
}
}  // namespace

// A kill (tasklet_exit, the usual pending exception: every tasklet left at shutdown gets one) is
// thrown as a new object instead of rethrowing the stored one: std::rethrow_exception's by-value
// argument needs a clean-up in this frame, so the unwinding stopped here and resumed (15 lookups of
// unwind tables per kill of a tasklet blocked at its top level, 13 without; callgrind: -21% of the
// instructions of a kill, nearly all in libgcc's unwinder). No local here has a destructor.
void rethrow_pending_exception(tasklet_impl* t) {
  if (const std::type_info* type = t->pending.__cxa_exception_type(); type && *type == typeid(tasklet_exit)) {
    t->pending = nullptr;  // at the head in ordered mode: the reference count may change (§4.7)
    void* object = __cxxabiv1::__cxa_allocate_exception(sizeof(tasklet_exit));
    ::new (object) tasklet_exit();  // trivial: cannot throw
    note_delivered(object, typeid(tasklet_exit), t);
    __cxxabiv1::__cxa_throw(object, const_cast<std::type_info*>(&typeid(tasklet_exit)), nullptr);
  }
  rethrow_pending_other(t);
}

// --wrap=exit redirects every undefined reference to exit in the link, this file's too: the address
// taken here is __wrap_exit's when the program was linked with the options, the real exit's when
// not. The __wrap_ functions are declared weak here, so that this file alone does not pull
// irrevocable.cpp out of the archive: without the options nothing does, and they are null (a
// program linked by hand then still links, and its serial runs work). Loaded through volatile: the
// compiler may not fold two functions' addresses to "different".
// (The options come in one list, WEFT_WRAP_OPTIONS: exception_ptr's reference count functions,
// private members, stand for themselves through std::current_exception.)
extern "C" [[gnu::weak]] void __wrap_exit(int status);
extern "C" [[gnu::weak]] int __wrap___cxa_guard_acquire(std::int64_t* guard);
extern "C" int __cxa_guard_acquire(std::int64_t* guard);  // libsupc++ (Itanium C++ ABI 3.3.2)
[[gnu::weak]] std::exception_ptr wrapped_current_exception() noexcept __asm__("__wrap__ZSt17current_exceptionv");

extern "C" [[gnu::weak]] void __wrap_abort() noexcept;
extern "C" [[gnu::weak]] void __wrap___assert_fail(const char*, const char*, unsigned, const char*) noexcept;
extern "C" [[noreturn]] void __assert_fail(const char*, const char*, unsigned, const char*) noexcept;  // glibc (assert.h, only declared under !NDEBUG)

bool program_linked_with_wraps() noexcept {
  void (*volatile exit_as_linked)(int) = &std::exit;
  int (*volatile guard_as_linked)(std::int64_t*) = &__cxa_guard_acquire;
  std::exception_ptr (*volatile current_as_linked)() noexcept = &std::current_exception;
  void (*volatile abort_as_linked)() noexcept = &std::abort;
  void (*volatile assert_as_linked)(const char*, const char*, unsigned, const char*) noexcept = &__assert_fail;
  return exit_as_linked == &__wrap_exit && guard_as_linked == &__wrap___cxa_guard_acquire &&
         current_as_linked == &wrapped_current_exception && abort_as_linked == &__wrap_abort &&
         assert_as_linked == &__wrap___assert_fail;
}

tasklet_impl* running_tasklet(runtime& r) noexcept { return r.is_parallel() ? ordered_running() : r.current; }

namespace {
bool in_tasklet() noexcept {
  runtime* r = thread_runtime();
  return r && running_tasklet(*r) != r->main;
}
// Set once, before main (runtimes are made by several threads at once: TSan).
[[maybe_unused]] const bool tasklet_hook_set = (running_in_tasklet = &in_tasklet, true);
}  // namespace

runtime::runtime() : config(effective_options()) {
  if (config.mode == mode::ordered && !program_linked_with_wraps())
    throw std::logic_error(
        "weft: ordered mode needs the program linked with " WEFT_WRAP_OPTIONS
        " (linking with the weft::weft CMake target adds them): without them std::exit, abort or a failed "
        "assert from a tasklet, the first use of a function-local static and the copies of a "
        "std::exception_ptr in a tasklet may lose output, happen in no serial run, run twice or free "
        "memory twice");
  // First, while nothing is made that a throw would leak: an unwritable WEFT_TRACE file throws.
  trace_id = trace_runtime_started(config.mode == mode::ordered, config.workers);
  install_terminate_handler();
  // Tasklets free in a later segment what they allocated in an earlier one, and the GC frees
  // replaced values in batches: glibc's defaults trimmed its heap after such frees and faulted the
  // pages back in (a newcomer's tasklets with 64 KiB-4 MiB buffers: 3.2 s and 156,000 page faults
  // serially, 0.3 s and 6,000 with these thresholds).
  keep_freed_heap_mapped();
  auto* m = new main_tasklet;
  m->is_main = true;
  m->owner = this;
  m->owner_thread = std::this_thread::get_id();
  m->refs.store(1, std::memory_order_relaxed);  // the holder's reference, dropped at detach
  m->state = tasklet_state::runnable;
  m->next = m->prev = m;
  control_blocks.fetch_add(1, std::memory_order_relaxed);
  refs.fetch_add(1, std::memory_order_relaxed);  // main's reference to us
  context_adopt_thread(m);
  main = current = head = m;
  m->channels_made = channels_before_runtime;
  ring_size = 1;
  if (config.mode == mode::ordered) ordered_start(*this);
}

runtime::~runtime() = default;

stack_pool& runtime::stacks() {
  if (!pool) pool = std::make_unique<stack_pool>(config.stack_size, config.stack_guard.value_or(false));
  return *pool;
}

runtime& this_runtime() {
  if (!holder.rt) [[unlikely]] {
    if (runtime* r = ordered_thread_runtime()) return *r;  // a worker thread owns no runtime
    holder.rt = new runtime;  // may throw (bad WEFT_* settings): then nothing is counted
    runtime_started();
    runtime_registered(*holder.rt);
  }
  return *holder.rt;
}

runtime* thread_runtime() noexcept { return holder.rt ? holder.rt : ordered_thread_runtime(); }

void release_runtime(runtime* r) noexcept {
  // acq_rel: the last owner sees everything the others wrote before it deletes.
  if (r && r->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete r;
}

void adopt(tasklet_impl* t, bool insert) {
  // Binding checks and changes the registry: an intent, so that in ordered mode the id is given at
  // commit, in serial order (DESIGN.md §4.7.3).
  intent in{.kind = intent_kind::bind, .target = t, .value = insert ? 1 : 0};
  perform(in);
}

void register_bound(runtime& r, tasklet_impl* t) noexcept {
  t->owner = &r;
  t->owner_thread = std::this_thread::get_id();
  t->id = r.next_id++;
  r.control_blocks.fetch_add(1, std::memory_order_relaxed);
  r.refs.fetch_add(1, std::memory_order_relaxed);  // released in destroy()
}

void drop_unrun_function(tasklet_impl* t) noexcept {
  const scheduler_ops_refused_scope refused(refused_in_dropped_tasklet);  // see destroy
  t->drop_function();
}

void destroy(tasklet_impl* t) noexcept {
  runtime* r = t->owner;
  drop_kept_channel(t);  // (one that never ended: a main, or one that refused to die)
  // The captures of a function that never ran go with it: a tasklet or channel operation in their
  // destructors is refused at every worker count, as in a weft::shared object's (in ordered mode
  // this runs at the commit of the segment that dropped the last handle: a send there crashed).
  {
    const scheduler_ops_refused_scope refused(refused_in_dropped_tasklet);
    delete t;
  }
  if (r) {
    r->control_blocks.fetch_sub(1, std::memory_order_relaxed);
    release_runtime(r);
  }
}

tasklet_impl::~tasklet_impl() = default;

void enlist_slow(runtime& r, tasklet_impl* t) noexcept {
  t->registered = true;
  ++r.alive;
  retain(t);
  t->all_prev = r.all_last;
  t->all_next = nullptr;
  (r.all_last ? r.all_last->all_next : r.all_first) = t;
  r.all_last = t;
}

void delist(runtime& r, tasklet_impl* t) noexcept {
  if (!t->registered) return;
  t->registered = false;
  (t->all_prev ? t->all_prev->all_next : r.all_first) = t->all_next;
  (t->all_next ? t->all_next->all_prev : r.all_last) = t->all_prev;
  t->all_next = t->all_prev = nullptr;
  release(t);
}

void retire(runtime& r, tasklet_impl* t) noexcept {
  if (t->stack) {
    r.stacks().release(t->stack);
    t->stack = {};
  }
  context_release(t);
  t->pending = nullptr;
  delist(r, t);
}

op_status perform(intent& in) {
  // The thread-local read inline (this_runtime() is not, for code after a switch): nothing below
  // uses r, or any thread-local address, after the switch.
  runtime* rp = holder.rt;
  if (!rp) [[unlikely]]
    rp = &this_runtime();
  runtime& r = *rp;
  if (r.is_parallel()) return ordered_perform(r, in);
  if (current_transaction()) [[unlikely]]
    throw std::logic_error(scheduler_op_in_transaction);
  if (scheduler_ops_refused) [[unlikely]]
    refuse_scheduler_op();
  tasklet_impl* self = r.current;
  apply_result res = in.kind == intent_kind::channel_op ? apply_channel(r, in) : apply(r, in);
  if (r.probe_countdown != 0) [[unlikely]] {  // serial state after a fallback (ordered.cpp, ordered_probe)
    ordered_serial_switch(r, self, res.next);
    if (self->pending) [[unlikely]] rethrow_pending_exception(self);
    return res.status;
  }
  if (res.next != self)
    serial_transfer(r, self, res.next);  // context_switch checks the stack pointer
  else
    context_check_stack(self);  // and so here, where nothing switches (schedule() alone in the ring)
  if (self->pending) [[unlikely]] rethrow_pending_exception(self);
  return res.status;
}

[[noreturn]] void tasklet_entry(tasklet_impl* prev, tasklet_impl* self) {
  runtime& r = *self->owner;
  const bool ordered = r.is_parallel();  // prev is then a thread's own context
  if (!ordered && prev->state == tasklet_state::dead) retire(r, prev);
  std::exception_ptr escaped;
  try {
    // Killed or raised into before it ever ran (§3.3, §3.4).
    if (ordered ? ordered_takes_pending(self) : self->pending != nullptr) rethrow_pending_exception(self);
    self->invoke();
  } catch (const tasklet_exit&) {
    // §3.2: uncaught, a kill ends the tasklet silently.
  } catch (...) {
    escaped = std::current_exception();
  }
  self->drop_function();
  // The run may have been drained to serial state since this tasklet started: read it again.
  if (self->owner->is_parallel()) ordered_exit(self, std::move(escaped));  // retired when this segment commits
  tasklet_impl* next;
  {
    intent in{.kind = intent_kind::exit, .exception = std::move(escaped)};
    next = apply(r, in).next;
  }
  r.current = next;
  if (!next->has_context) context_prepare(next, r.stacks().allocate());
  next->started = true;
  context_exit(self, next);
}

std::string display_name(const tasklet_impl& t) {
  if (!t.name.empty()) return t.name;
  return t.is_main ? std::string("main") : fmt::format("tasklet-{}", t.id);
}

}  // namespace weft::detail

namespace weft {

using namespace detail;

resource_counts resources() {
  runtime& r = this_runtime();
  std::unique_lock<std::mutex> lock;
  if (r.is_parallel()) lock = std::unique_lock(ordered_lock(r));
  resource_counts c;
  c.live_tasklets = r.alive;
  c.control_blocks = r.control_blocks.load(std::memory_order_relaxed);
  c.channels = r.channels.load(std::memory_order_relaxed);
  if (r.pool) {
    c.stacks_in_use = r.pool->in_use();
    c.stacks_cached = r.pool->cached();
    c.stack_bytes_reserved = r.pool->reserved_bytes();
  }
  return c;
}

run_statistics run_stats() {
  runtime* r = thread_runtime();
  if (r && r->ordered) return ordered_stats(*r);
  if (!r)
    if (auto last = last_ordered_stats()) return *last;
  return {};
}

namespace {
// Frees what the epoch GC holds, as far as other threads allow: an object retired at epoch e goes once
// the epoch is past e + 1 (a collection advances it by one); a plain thread still in a transaction may
// hold some back.
void collect_retired_values() noexcept {
  for (int i = 0; i < 3 && detail::epoch_pending() != 0; ++i) detail::epoch_collect();
}
}  // namespace

resource_counts shutdown() {
  // A tasklet running on a worker thread (ordered mode) finds its runtime there: it must get the
  // error too, not an empty count (the thread owns no runtime of its own).
  runtime* r = thread_runtime();
  if (!r) return {};
  if (running_tasklet(*r) != r->main) throw std::logic_error("weft::shutdown() must be called from the main tasklet");
  if (current_transaction())
    throw std::logic_error(
        "weft::shutdown() inside weft::atomically: killing the tasklets switches to them, which a "
        "transaction cannot do; call it outside the transaction");
  r->shutting_down = true;
  // A tasklet may catch tasklet_exit and go on; give every tasklet a few chances, then give up.
  for (int round = 0; round < 4; ++round) {
    std::vector<tasklet> victims;
    for (tasklet_impl* t = r->main->next; t != r->main; t = t->next) victims.push_back(tasklet::from_impl(t));
    // Blocked ones channel by channel, each queue in FIFO order (only ours: a channel may be shared
    // with other threads, SEMANTICS.md §5b), then those another thread has just woken.
    std::unordered_set<channel_core*> seen;
    std::unordered_set<tasklet_impl*> queued;
    for (tasklet_impl* t = r->all_first; t; t = t->all_next) {
      if (t->state != tasklet_state::blocked) continue;
      channel_core* c = t->channel;
      if (!seen.insert(c).second) continue;
      channel_guard g(*r, c);
      if (tasklet_impl* q = c->head) do {
        if (q->owner == r && !q->ghost) {
          victims.push_back(tasklet::from_impl(q));
          queued.insert(q);
        }
        q = q->next;
      } while (q != c->head);
    }
    for (tasklet_impl* t = r->all_first; t; t = t->all_next)
      if (t->state == tasklet_state::blocked && !queued.contains(t)) victims.push_back(tasklet::from_impl(t));
    for (tasklet_impl* t = r->all_first; t; t = t->all_next)
      if (t->state == tasklet_state::paused) victims.push_back(tasklet::from_impl(t));
    if (victims.empty()) break;
    for (tasklet& v : victims) {
      if (!v.alive()) continue;
      try {
        intent in{.kind = intent_kind::raise, .target = v.impl(), .kill = true, .shutdown = true,
                  .exception = std::make_exception_ptr(tasklet_exit{})};
        perform(in);
      } catch (const tasklet_exit&) {
      } catch (const std::exception& e) {
        detail::diagnostics().warn("weft: exception while killing tasklet '{}' at shutdown: {}", v.name(), e.what());
      } catch (...) {
        detail::diagnostics().warn("weft: exception while killing tasklet '{}' at shutdown", v.name());
      }
    }
  }
  settle_ghosts(*r);
  // An ordered run's worker threads hold what their commits retired in lists that only they free
  // (a registry map of handles replaced by a segment committed there): stopped now, with nothing
  // left to run, they hand those to the GC's orphans, which the collections below free. Counted with
  // them running, a run at two workers returned up to 150 control blocks more than one worker
  // (newcomer round 21: in 1 of 10 runs).
  if (r->ordered) {
    ordered_stop(*r);
    r->parallel.store(false, std::memory_order_relaxed);
  }
  // Old tvar values retired to the epoch GC may hold the last handles of tasklets and channels: free
  // them now, so that the counts are those of a quiescent program whatever the mode (one worker
  // collects rarely, ordered mode at every segment: a newcomer's program got 6 control blocks at
  // one worker and 1 at two).
  collect_retired_values();
  drop_kept_channel(r->main);  // (main is running: in no channel's queue)
  resource_counts counts = resources();
  if (counts.live_tasklets != 0)
    detail::diagnostics().warn("weft: {} tasklets refused to die at shutdown; their stacks are leaked", counts.live_tasklets);
  r->shutting_down = false;
  holder.detach();
  // Again once the worker threads have ended (detach, ordered_stop): what they retired and could not
  // free yet went to the GC's orphan list when they ended, after the collections above (values a run
  // replaced at 2 workers, weft::shared objects among them, were never destroyed: 2393-2399 of 2400
  // in a newcomer's program).
  collect_retired_values();
  return counts;
}

void detail::write_output(std::string_view text) { write_output_to(stdout, text); }

void detail::write_output(std::string_view text, const std::source_location& where) {
  if (this_runtime().is_parallel()) {
    ordered_output(stdout, text, &where);
    return;
  }
  emit(stdout, text);
}

void detail::sink_mutex::hold() noexcept {
  if (alloc_log* log = active_alloc_log()) {
    alloc_log_stop_hold::alloc_log_hold_stops(*log);
    held_ = log;
  }
}
void detail::sink_mutex::lock() {
  mutex_.lock();
  hold();
}
bool detail::sink_mutex::try_lock() {
  if (!mutex_.try_lock()) return false;
  hold();
  return true;
}
void detail::sink_mutex::unlock() noexcept {
  // Released before the mutex, whose next holder may set held_: between the two nothing allocates,
  // so the segment cannot be stopped with the mutex still locked.
  if (alloc_log* log = std::exchange(held_, nullptr)) alloc_log_stop_hold::alloc_log_release_stops(*log);
  mutex_.unlock();
}

void detail::write_output_to(std::FILE* stream, std::string_view text) {
  if (this_runtime().is_parallel()) {
    ordered_output(stream, text);
    return;
  }
  emit(stream, text);
}

namespace detail {

void emit(std::FILE* stream, std::string_view text) noexcept {
  if (text.empty()) return;
  // One write(2) per call, as Go's fmt.Print to os.Stdout: nothing waits in a stdio buffer for an
  // exit path that does not flush (std::terminate, a fatal signal), and `tail -f` sees each line.
  std::fwrite(text.data(), 1, text.size(), stream);
  std::fflush(stream);
}

namespace {
std::mutex escaped_lock;
// The object of the last exception that escaped a tasklet, by address: a std::exception_ptr here
// kept it alive after main caught it, through shutdown() and exit, until the next one escaped
// (newcomer round 10: its destructor never ran). Its type and what() too: main caught it, then threw
// an exception of its own that malloc put at the same address, and the terminate message named the
// tasklet (newcomer round 14). Only an exception of the same type and text at the same address can
// still be taken for it.
const void* escaped_object = nullptr;
const std::type_info* escaped_type = nullptr;
std::string* escaped_from = new std::string;
std::string* escaped_what = new std::string;
std::terminate_handler previous_terminate = nullptr;

// A kill or raise_exception that reaches a tasklet while a destructor waits at a switch point is
// thrown out of that destructor: C++ ends the program there (std::terminate, "terminate called
// without an active exception": the exception is not caught yet). During an unwinding (Stackless'
// "finally: notify" pattern, killed twice) Stackless would unwind on with the new exception, C++
// cannot; outside one a destructor may not throw either (noexcept). What was thrown, into which
// tasklet, and the unwinding depth then (the count is one higher while the throw is on its way out);
// per thread; the handler believes it only while that tasklet still runs on the thread (a delivery
// caught and handled must not name a later terminate of another tasklet). Cheap to note: every kill at a
// shutdown passes here (describing the exception rethrows it, ~9,000 instructions: hackysack's
// teardown +16%), so only during an unwinding are the texts made at once (the shutdown's kill is
// named there); otherwise the handler makes them from the tasklet, which is still alive (its
// frames are what throws), and from the exception's type. Trivially destructible (fixed buffers,
// addresses, no reference): a thread's runtime is shut down by its thread-local destructor, which
// kills tasklets — after this record's own destructor had run, when the record was first used
// later than the runtime was made (round 6's p5: its strings freed twice at exit).
struct thrown_into_tasklet {
  bool set;
  char from[160];      // during an unwinding only (else made by the handler)
  char what[256];      // likewise
  int depth;
  const void* thrown;  // identity only: never dereferenced
  const tasklet_impl* target;
  const std::type_info* type;
};
constinit thread_local thrown_into_tasklet last_delivered{};

// How the terminate handler's messages name a tasklet.
std::string tasklet_label(const tasklet_impl* t) {
  if (t->is_main) return "the main tasklet";
  return t->name.empty() ? fmt::format("tasklet-{}", t->id) : fmt::format("tasklet '{}' (tasklet-{})", t->name, t->id);
}

std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const tasklet_exit&) {
    return "weft::tasklet_exit";
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "(not a std::exception)";
  }
}

std::string describe(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const tasklet_exit&) {
    return "killed (weft::tasklet_exit)";
  } catch (const std::exception& x) {
    return fmt::format("raised into ({})", x.what());
  } catch (...) {
    return "raised into";
  }
}

}  // namespace
}  // namespace detail
}  // namespace weft

// libstdc++'s personality routine (exported, not declared in a header).
extern "C" _Unwind_Reason_Code __gxx_personality_v0(int, _Unwind_Action, _Unwind_Exception_Class, _Unwind_Exception*,
                                                    _Unwind_Context*);

namespace weft {
namespace detail {
namespace {

// Whether std::terminate was called by a throw that found no handler at all — the exception would
// have left the thread's first function (main(), say): nothing was unwound, the throw itself gives
// up (__cxa_throw, __cxa_rethrow or std::rethrow_exception called std::terminate) — rather than by
// an unwinding that reached a function that may not throw (a destructor, noexcept): the personality
// routine's call from inside the unwinder, or a landing pad's own call in the function (the throw's
// frames are gone then). Read from the stack: the first of those functions met above the handler.
// Nothing met counts as "may not throw", the message of old.
bool terminate_from_unhandled_throw() noexcept {
  struct walk {
    int verdict = 0;  // 1: a throw function first, -1: the unwinder first
    int frames = 0;
  } w;
  _Unwind_Backtrace(
      [](_Unwind_Context* ctx, void* arg) -> _Unwind_Reason_Code {
        auto& w = *static_cast<walk*>(arg);
        int before = 0;  // a signal frame's IP is the faulting instruction, others a return address
        const _Unwind_Ptr ip = _Unwind_GetIPInfo(ctx, &before);
        if (ip == 0) return _URC_END_OF_STACK;
        const void* f = _Unwind_FindEnclosingFunction(reinterpret_cast<void*>(ip - (before ? 0 : 1)));
        using rethrow_fn = void (*)(std::exception_ptr);
        const void* const throwing[] = {reinterpret_cast<const void*>(&__cxxabiv1::__cxa_throw),
                                        reinterpret_cast<const void*>(&__cxxabiv1::__cxa_rethrow),
                                        reinterpret_cast<const void*>(static_cast<rethrow_fn>(&std::rethrow_exception))};
        const void* const unwinding[] = {reinterpret_cast<const void*>(&__gxx_personality_v0),
                                         reinterpret_cast<const void*>(&_Unwind_RaiseException),
                                         reinterpret_cast<const void*>(&_Unwind_Resume),
                                         reinterpret_cast<const void*>(&_Unwind_Resume_or_Rethrow)};
        for (const void* g : throwing)
          if (f == g) w.verdict = 1;
        for (const void* g : unwinding)
          if (f == g) w.verdict = -1;
        return w.verdict != 0 || ++w.frames > 64 ? _URC_END_OF_STACK : _URC_NO_REASON;
      },
      &w);
  return w.verdict == 1;
}

[[noreturn]] void on_terminate() noexcept {
  std::fflush(nullptr);  // nothing printed is lost
  // GCC's -O2 code calls std::terminate before the exception is caught (no current exception, the
  // uncaught count one higher); its -O1 code (the sanitizer builds) catches it first.
  const std::exception_ptr current = std::current_exception();
  bool escaped_tasklet = false;
  {
    std::lock_guard lock(escaped_lock);
    escaped_tasklet = last_delivered.set && escaped_object == last_delivered.thrown;
  }
  runtime* here = thread_runtime();
  if (const auto& u = last_delivered;
      u.set && !escaped_tasklet && here && running_tasklet(*here) == u.target &&
      (current ? exception_object_of(current) == u.thrown : std::uncaught_exceptions() == u.depth + 1)) {
    if (terminate_from_unhandled_throw())
      // Not a destructor's switch point: the exception was not caught anywhere (the main tasklet's
      // deadlock error, a send_exception or raise_exception into main; round 12).
      std::fprintf(stderr, "weft: an exception reached %s at a switch point and nobody caught it: %s\n",
                   tasklet_label(u.target).c_str(),
                   current ? what_of(current).c_str()
                   : u.type && *u.type == typeid(tasklet_exit) ? "weft::tasklet_exit"
                                                               : "(the exception is gone)");
    else if (u.depth > 0)
      std::fprintf(stderr,
                   "weft: %s was %s while a destructor run by an exception's unwinding waited at a switch point; "
                   "C++ cannot let an exception leave a destructor during unwinding, so the program ends "
                   "(std::terminate). Catch it in that destructor, or do not kill or raise into a tasklet that is "
                   "unwinding.\n",
                   u.from, u.what);
    else
      std::fprintf(stderr,
                   "weft: %s was %s at a switch point that an exception may not leave (in a destructor, or "
                   "another function that may not throw), so the program ends (std::terminate). Catch it "
                   "around that switch point, or do not kill or raise into a tasklet waiting there.\n",
                   tasklet_label(u.target).c_str(),
                   current ? describe(current).c_str()
                   : u.type && *u.type == typeid(tasklet_exit) ? "killed (weft::tasklet_exit)"
                                                               : "raised into");
    std::fflush(stderr);
  }
  if (const std::exception_ptr e = current) {
    const std::string what = what_of(e);
    std::string from;
    {
      std::lock_guard lock(escaped_lock);
      if (escaped_object == exception_object_of(e) && escaped_type == e.__cxa_exception_type() && *escaped_what == what)
        from = *escaped_from;
    }
    if (!from.empty()) {
      std::fprintf(stderr, "weft: an exception escaped %s and nobody caught it: %s\n", from.c_str(), what.c_str());
      std::fflush(stderr);
    }
  }
  if (previous_terminate) previous_terminate();
  abort_unwrapped();
}
}  // namespace

void note_escaped(const std::exception_ptr& e, const tasklet_impl* t) {
  std::string from = tasklet_label(t);
  std::string what = what_of(e);
  std::lock_guard lock(escaped_lock);
  escaped_object = exception_object_of(e);
  escaped_type = e.__cxa_exception_type();
  *escaped_from = std::move(from);
  *escaped_what = std::move(what);
}

namespace {
// `describe` is how the texts name the exception (called only during an unwinding).
template <class Describe>
void note_delivered_as(const void* object, const std::type_info* type, const tasklet_impl* t,
                       Describe&& describe_it) noexcept {
  auto& u = last_delivered;
  u.set = true;
  u.depth = std::uncaught_exceptions();
  u.thrown = object;
  u.target = t;
  u.type = type;
  if (u.depth == 0) return;  // the texts are made by the handler, if it runs
  try {
    std::snprintf(u.from, sizeof u.from, "%s", tasklet_label(t).c_str());
    // The shutdown's own kill (main returned, the thread ended, weft::shutdown()): the program made
    // no second kill itself, so say where it came from (round 8).
    const bool by_shutdown = t->owner && t->owner->shutting_down;
    std::snprintf(u.what, sizeof u.what, "%s%s", describe_it().c_str(),
                  by_shutdown ? " by the shutdown of its thread's tasklets (main returned, the thread ended, or "
                                "weft::shutdown() was called)"
                              : "");
  } catch (...) {
    u.set = false;  // out of memory for the texts: no message rather than a wrong one
  }
}
}  // namespace

void note_delivered(const std::exception_ptr& e, const tasklet_impl* t) noexcept {
  note_delivered_as(exception_object_of(e), e.__cxa_exception_type(), t, [&] { return describe(e); });
}

void note_delivered(const void* object, const std::type_info& type, const tasklet_impl* t) noexcept {
  note_delivered_as(object, &type, t, [] { return std::string("killed (weft::tasklet_exit)"); });
}

void install_terminate_handler() {
  static std::once_flag once;
  std::call_once(once, [] { previous_terminate = std::set_terminate(&on_terminate); });
}

}  // namespace detail

}  // namespace weft

namespace weft::detail {

channel_core* channel_create(void (*move)(void* dst, void* src)) {
  auto* c = new channel_core;
  c->move = move;
  runtime* r = thread_runtime();
  tasklet_impl* t = r ? running_tasklet(*r) : nullptr;
  if (t) {
    c->creator = t->id;
    c->serial = ++t->channels_made;  // a rolled-back segment gives its count back (ordered.cpp)
  } else if (r) {
    // Made by weft's own context, outside any tasklet: a destructor the epoch collector runs between
    // segments (a tvar value's; when, depends on the worker count anyway). It crashed on the missing
    // tasklet (round 20). Its identity: a creator no tasklet has, and a count of the process.
    static std::atomic<std::uint64_t> made_outside_tasklets{0};
    c->creator = std::numeric_limits<std::uint64_t>::max();
    c->serial = made_outside_tasklets.fetch_add(1, std::memory_order_relaxed) + 1;
  } else {
    // Before the thread's runtime exists (a global channel, the first lines of main): main's, and
    // main goes on counting from there when the runtime is made.
    c->creator = 0;
    c->serial = ++channels_before_runtime;
  }
  return c;
}

channel_key channel_identity(const channel_core* c) noexcept { return {c->creator, c->serial}; }

void channel_retain(channel_core* c) noexcept {
  c->refs.fetch_add(1, std::memory_order_relaxed);  // made from an existing reference
  if (handle_log* log = segment_handles) [[unlikely]]
    log->record(c, handle_log::channel_inc);  // undone if the segment aborts
}

void channel_destroy(channel_core* c) noexcept { delete c; }

void channel_release(channel_core* c) noexcept {
  if (!c) return;
  if (handle_log* log = segment_handles) [[unlikely]] {
    log->record(c, handle_log::channel_dec);  // at the segment's commit
    return;
  }
  channel_release_now(c);
}

channel_view channel_read(const channel_core* c) noexcept {
  observe_scheduler();
  channel_guard g(this_runtime(), const_cast<channel_core*>(c));  // §5b: another thread may change it
  return {c->balance, c->preference, c->schedule_all, c->closing};
}

}  // namespace weft::detail
