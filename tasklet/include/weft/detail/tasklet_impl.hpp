// weft/detail/tasklet_impl.hpp — the tasklet control block (private to weft; in a public header only
// because `tasklet(F)` is a template that must place F inside it).
//
// Ownership: handles (weft::tasklet) and the runtime share the block through `refs`. The runtime takes
// its reference when the tasklet is first inserted into the ring and drops it when the tasklet has
// died and its stack is back in the pool; a bound tasklet that was never inserted lives only as long
// as its handles.
//
// Who touches what: every field but `refs` belongs to the runtime of the owning thread and is changed
// only by the scheduler while applying an intent (scheduler/src/apply.cpp) or by the context switch
// code (tasklet/src/context.cpp) — except that while it waits in a channel shared with other threads'
// runtimes, its queue links, channel wait fields and `pending` are changed under the channel's lock
// by whichever runtime matches it (scheduler/src/threads.cpp). The layout is the same in every build
// (sanitizer fields included) so that user code compiled with other flags links against the library
// safely.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

#include "weft/gc.hpp"

namespace weft::detail {

struct runtime;
struct channel_core;

enum class tasklet_state : std::uint8_t {
  paused,    ///< alive, in no ring and no channel: bound and not inserted, removed, or switched away from
  runnable,  ///< in the runnable ring
  blocked,   ///< waiting in a channel's queue
  dead,      ///< its function returned or threw (or it was killed before it started)
};

// Layout: a channel hand-off touches the blocked partner's control block, usually cold (thousands of
// tasklets, each last run long ago). Everything a hand-off and the resume after it touch comes first,
// in 128 bytes (two or three cache lines, as malloc places the block; the fields in their old order
// spread over four or five); the rest (registry links, identity, name, ordered mode's and the
// sanitizers' bookkeeping) follows. Cachegrind, hackysack K=100,000 (300,000 passes minus 2): 8.1 ->
// 7.5 last-level data misses per pass with the hand-off change of apply.cpp. Aligning the block to a
// cache line (6.8 per pass) was not kept: glibc's aligned allocation costs ~60 more bytes per tasklet,
// and so 7% more page faults when 100,000 tasklets start.
class tasklet_impl {
 public:
  tasklet_impl() = default;
  tasklet_impl(const tasklet_impl&) = delete;
  tasklet_impl& operator=(const tasklet_impl&) = delete;
  virtual ~tasklet_impl();

  /// Runs the bound function (once, on the tasklet's own stack).
  virtual void invoke() = 0;
  /// Destroys the bound function and what it captured (at death, or kill before start).
  virtual void drop_function() noexcept = 0;
  /// The bytes of the bound function and of its "still bound" flag: a segment's rollback restores
  /// them with the stack (DESIGN.md §4.2: mutable captures are the tasklet's own state).
  virtual std::pair<void*, std::size_t> function_bytes() noexcept { return {nullptr, 0}; }

  // --- first cache line: what a channel hand-off reads and writes ----------------------------------
  std::atomic<std::uint32_t> refs{0};
  tasklet_state state = tasklet_state::paused;
  bool is_main = false;
  bool started = false;     ///< has run (in ordered mode: its first segment has committed); main: always
  bool has_context = false; ///< has a stack and a context (ordered mode: from its first dispatch on)
  bool registered = false;  ///< counted in the runtime's list of live tasklets (holds a reference)
  /// Paused inside weft::run() (else paused by switch_to/schedule_remove); see runtime::runners.
  bool in_run = false;
  std::int8_t direction = 0;  ///< while blocked: +1 sending, -1 receiving
  /// A tasklet of another runtime matched it: out of the channel's queue, in its runtime's mail, still
  /// `blocked` until its runtime takes the mail. Under the channel's lock (scheduler/src/threads.cpp).
  bool remote_woken = false;
  /// Stands in a channel's queue for a tasklet that its thread's end killed (scheduler/src/apply.cpp,
  /// SEMANTICS.md §5b): never runs; a partner's operation finds "tasklet has no thread". (In the
  /// padding of the first line: the hand-off reads it beside `owner`.)
  bool ghost = false;

  // Links: the runnable ring or a channel's wait queue (never both).
  tasklet_impl* next = nullptr;
  tasklet_impl* prev = nullptr;

  runtime* owner = nullptr;
  void* context = nullptr;  ///< saved fcontext while suspended
  void* slot = nullptr;     ///< while blocked: a sender's T to move from; a receiver's std::optional<T> to fill

  // --- second cache line: the rest of the wait state, and what a resume reads ----------------------
  /// While blocked: the channel it waits in. Else, if a hand-off ended its last wait: that channel,
  /// whose reference it kept (scheduler/src/apply.cpp, queue_remove).
  channel_core* channel = nullptr;
  std::exception_ptr pending;         ///< thrown at the tasklet's switch point when it next resumes
  std::exception_ptr send_exception;  ///< a blocked send_exception's exception
  void* eh_globals[2] = {nullptr, nullptr};  ///< this tasklet's C++ "caught exceptions" state while suspended
  stack_extent stack;
  void* segment = nullptr;  ///< ordered mode: the segment in flight, if any (under the commit lock)

  // --- cold ----------------------------------------------------------------------------------------
  // The runtime's list of registered tasklets (for shutdown, in insertion order).
  tasklet_impl* all_next = nullptr;
  tasklet_impl* all_prev = nullptr;
  std::thread::id owner_thread;
  std::uint64_t id = 0;
  std::string name;

  // Ordered mode (scheduler/src/ordered.cpp), under the runtime's commit lock.
  std::uint8_t last_status = 0;      ///< what the last committed switch point returns (op_status)
  bool want_head = false;            ///< its next segment runs at the head, inevitable
  std::uint8_t in_place_skip = 0;    ///< switch points left before its segment tries to commit in place again
  std::uint8_t in_place_backoff = 0; ///< the last in_place_skip set (doubles at each try that did not go on)
  std::uint32_t head_aborts = 0;     ///< consecutive aborts of segments that started at the head
  std::uint64_t channels_made = 0;   ///< channels this tasklet made (their identity, channel_create)
  std::uint32_t last_worker = 0;     ///< ordered mode: index + 1 of the thread that ran its last segment (0: none)
  std::uint32_t attempts = 0;        ///< aborted attempts of its next segment (keys abort injection)
  std::uint64_t segments = 0;        ///< committed segments (keys abort injection)

  // Sanitizer bookkeeping (unused in ordinary builds).
  void* asan_fake_stack = nullptr;
  const void* asan_stack_bottom = nullptr;
  std::size_t asan_stack_size = 0;
  void* tsan_fiber = nullptr;
  bool tsan_rewound = false;  ///< TSan: a fiber given to a rolled-back tasklet (see context_rewound)
  // Ordered mode (in the padding here): the thread's marks of an exception being made or destroyed
  // (exception_being_made, exception_storage_dying: bits 1 and 2) while the tasklet is suspended. A
  // switch point inside an exception's constructor or destructor leaves them set: its next segment
  // runs at the head (scheduler/src/ordered.cpp, leave and needs_head).
  std::uint8_t exception_flux = 0;
  std::uint32_t tsan_fiber_lives = 0;  ///< TSan: tasklet lives its fiber has served (context.cpp's pool)
};

template <class F>
class bound_tasklet final : public tasklet_impl {
 public:
  template <class G>
  explicit bound_tasklet(G&& g) : fn_(std::forward<G>(g)), has_fn_(true) {}
  ~bound_tasklet() override { drop_function(); }
  void invoke() override { fn_.value(); }
  std::pair<void*, std::size_t> function_bytes() noexcept override {
    auto* first = reinterpret_cast<char*>(&fn_);
    return {first, static_cast<std::size_t>(reinterpret_cast<char*>(&has_fn_ + 1) - first)};
  }
  void drop_function() noexcept override {
    if (has_fn_) {
      has_fn_ = false;
      fn_.value.~F();
    }
  }

 private:
  struct holder {
    F value;
  };
  union {
    holder fn_;
  };
  bool has_fn_;
};

/// Registers a freshly made block with the calling thread's runtime (creating it on first use) and,
/// with `insert`, appends it to the runnable ring (weft::spawn): one switch point in ordered mode
/// (the id is given when the segment commits).
void adopt(tasklet_impl* t, bool insert = false);
/// Called when the last reference goes.
void destroy(tasklet_impl* t) noexcept;

/// Reference changes of tasklet, channel and weft::shared handles made by a speculative segment (DESIGN.md §4.7.5):
/// increments apply at once and are undone if the segment aborts; decrements (which may destroy)
/// wait for its commit. Installed on the thread while the segment runs (scheduler/src/ordered.cpp).
class handle_log {
 public:
  enum kind : std::uint8_t { tasklet_inc, tasklet_dec, channel_inc, channel_dec, shared_inc, shared_dec };
  void record(void* object, kind k);  // out of line (scheduler/src/ordered.cpp)
  struct entry {
    void* object;
    kind k;
    std::uint32_t out_at = 0;  ///< how much of the segment's deferred output came before it
  };
  entry* items = nullptr;
  std::uint32_t size = 0, cap = 0;
  /// The segment's deferred standard output: a weft::shared object whose last handle the segment
  /// drops is destroyed at the commit between the output written before and after the drop.
  const std::string* out = nullptr;
  /// The segment runs inevitable: weft::shared and tasklet releases happen at once, as with one
  /// worker (a tasklet's last handle destroys its function's captures where it goes).
  bool releases_now = false;
};
__attribute__((tls_model("initial-exec"))) extern constinit thread_local handle_log* segment_handles;

inline void retain(tasklet_impl* t) noexcept {
  if (!t) return;
  t->refs.fetch_add(1, std::memory_order_relaxed);  // a new reference is made from an existing one
  if (handle_log* log = segment_handles) [[unlikely]]
    log->record(t, handle_log::tasklet_inc);
}
/// Drops a reference at once, whatever runs on the thread (the commit and abort paths use it).
inline void release_now(tasklet_impl* t) noexcept {
  // acq_rel: the last release must see every write made through the other references before destroy.
  if (t && t->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy(t);
}
inline void release(tasklet_impl* t) noexcept {
  if (!t) return;
  if (handle_log* log = segment_handles; log && !log->releases_now) [[unlikely]] {
    log->record(t, handle_log::tasklet_dec);
    return;
  }
  release_now(t);
}

/// A new control block bound to f, registered (and with `insert`, in the ring); no handle holds it yet.
template <class F>
tasklet_impl* make_tasklet(F&& f, bool insert = false) {
  static_assert(std::is_invocable_v<std::decay_t<F>&>, "a tasklet's function must be callable with no arguments");
  auto* t = new bound_tasklet<std::decay_t<F>>(std::forward<F>(f));
  try {
    adopt(t, insert);
  } catch (...) {
    if (!t->owner) delete t;  // never registered (else the runtime knows it: left to it)
    throw;
  }
  return t;
}

/// What tasklet handles are ordered and hashed by (their id, given at bind in serial order).
inline std::uint64_t tasklet_order_key(const tasklet_impl* t) noexcept { return t->id; }

}  // namespace weft::detail
