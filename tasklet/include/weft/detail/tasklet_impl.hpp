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
// code (tasklet/src/context.cpp). The layout is the same in every build (sanitizer fields included) so
// that user code compiled with other flags links against the library safely.
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

  std::atomic<std::uint32_t> refs{0};
  tasklet_state state = tasklet_state::paused;
  bool is_main = false;
  bool started = false;     ///< has a context (main: always)
  bool registered = false;  ///< counted in the runtime's list of live tasklets (holds a reference)
  bool in_run = false;      ///< main only: paused inside weft::run() (else paused by switch_to/schedule_remove)
  std::int8_t direction = 0;  ///< while blocked: +1 sending, -1 receiving

  // Links: the runnable ring or a channel's wait queue (never both), and the runtime's list of
  // registered tasklets (for shutdown, in insertion order).
  tasklet_impl* next = nullptr;
  tasklet_impl* prev = nullptr;
  tasklet_impl* all_next = nullptr;
  tasklet_impl* all_prev = nullptr;

  runtime* owner = nullptr;
  std::thread::id owner_thread;
  std::uint64_t id = 0;

  void* context = nullptr;  ///< saved fcontext while suspended
  stack_extent stack;
  void* eh_globals[2] = {nullptr, nullptr};  ///< this tasklet's C++ "caught exceptions" state while suspended

  std::exception_ptr pending;  ///< thrown at the tasklet's switch point when it next resumes

  // Channel wait state (valid while blocked).
  channel_core* channel = nullptr;
  void* slot = nullptr;             ///< sender: the T to move from; receiver: the std::optional<T> to fill
  std::exception_ptr send_exception;  ///< a blocked send_exception's exception

  std::string name;

  // Sanitizer bookkeeping (unused in ordinary builds).
  void* asan_fake_stack = nullptr;
  const void* asan_stack_bottom = nullptr;
  std::size_t asan_stack_size = 0;
  void* tsan_fiber = nullptr;
};

template <class F>
class bound_tasklet final : public tasklet_impl {
 public:
  template <class G>
  explicit bound_tasklet(G&& g) : fn_(std::forward<G>(g)), has_fn_(true) {}
  ~bound_tasklet() override { drop_function(); }
  void invoke() override { fn_.value(); }
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

/// Registers a freshly made block with the calling thread's runtime (creating it on first use).
void adopt(tasklet_impl* t);
/// Called when the last reference goes.
void destroy(tasklet_impl* t) noexcept;

inline void retain(tasklet_impl* t) noexcept {
  if (t) t->refs.fetch_add(1, std::memory_order_relaxed);  // a new reference is made from an existing one
}
inline void release(tasklet_impl* t) noexcept {
  // acq_rel: the last release must see every write made through the other references before destroy.
  if (t && t->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy(t);
}

template <class F>
tasklet_impl* make_tasklet(F&& f) {
  static_assert(std::is_invocable_v<std::decay_t<F>&>, "a tasklet's function must be callable with no arguments");
  auto* t = new bound_tasklet<std::decay_t<F>>(std::forward<F>(f));
  adopt(t);
  return t;
}

}  // namespace weft::detail
