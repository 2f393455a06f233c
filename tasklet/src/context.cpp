// Context creation and switching on Boost.Context's fcontext, with the C++ exception-handling state
// and sanitizer fiber annotations that must travel with each tasklet.
//
// All of this runs on the owning runtime's thread; nothing here is shared between threads.
#include <boost/context/detail/fcontext.hpp>

#include "weft/detail/context.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define WEFT_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>

#include <mutex>
#include <tuple>
#include <utility>
#include <vector>
#define WEFT_TSAN 1
extern "C" void __tsan_func_entry(void* call_pc);  // the compiler's instrumentation hook (libtsan)
#endif

// The C++ runtime's per-thread exception state {caught-exceptions chain, uncaught count}. Declared
// here rather than through <cxxabi.h>, which marks it __attribute__((const)) and so lets the
// compiler reuse a stale thread-local address after a tasklet moves to another thread.
extern "C" void* __cxa_get_globals() noexcept;
extern "C" void __cxa_end_catch();

#include <unwind.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <typeinfo>

namespace weft::detail {

__attribute__((tls_model("initial-exec"))) constinit thread_local handle_log* segment_handles = nullptr;

namespace ctx = boost::context::detail;

namespace {

using handoff = context_handoff;

// The thread's exception state lives at a fixed address per thread: look it up once per thread
// (through libstdc++'s general-dynamic TLS) and keep it in a fast initial-exec thread-local.
// (In the parallel modes a tasklet resumes on another thread; DESIGN.md §4 notes that GCC may then
// reuse a thread-local address computed before the switch, which is why this is read in
// non-inlined helpers after every jump.)
__attribute__((tls_model("initial-exec"))) thread_local void** eh_globals_here = nullptr;

// Read through the fs segment on every call, never through an address computed earlier, so this
// stays right if a tasklet resumes on another thread.
inline void** eh_globals() noexcept {
  void** g = eh_globals_here;
  if (!g) [[unlikely]]
    g = eh_globals_here = static_cast<void**>(__cxa_get_globals());
  return g;
}

inline void save_eh(tasklet_impl* t) noexcept {
  void** g = eh_globals();
  t->eh_globals[0] = g[0];
  t->eh_globals[1] = g[1];
}
inline void load_eh(const tasklet_impl* t) noexcept {
  void** g = eh_globals();
  g[0] = t->eh_globals[0];
  g[1] = t->eh_globals[1];
}

#ifdef WEFT_TSAN
// A fiber given to a rolled-back tasklet (context_rewound) holds no entries of the frames the tasklet
// resumes inside, which it will return from: give it that many entries first (more than any
// tasklet's depth at a switch point; the spare ones stay at the bottom).
constexpr int tsan_rewound_frames = 512;

// TSan fibers are reused. Making one costs milliseconds (TSan maps and clears its per-fiber state,
// ~0.5 MiB, a page fault per page): one per spawn and per rollback made a TSan run of the account
// stress test (20,000 spawns) take a minute instead of a second, and time out with injection. A
// fiber keeps the shadow call stack entries its last tasklet left (the frames it was in when it
// ended, at most tsan_rewound_frames plus its depth if it was given the rewound entries), so
// each life adds fewer than 2 * tsan_rewound_frames entries; TSan's shadow stack holds 64 Ki, and
// a fiber retires after tsan_fiber_max_lives lives, well before it could fill.
constexpr std::uint32_t tsan_fiber_max_lives = 24;
constexpr std::size_t tsan_fiber_pool_cap = 256;  // idle fibers kept (each holds ~0.5 MiB)

struct tsan_fiber_pool {
  std::mutex mu;
  std::vector<std::pair<void*, std::uint32_t>> idle;  // fiber, lives served
};
tsan_fiber_pool& fiber_pool() {
  static tsan_fiber_pool* pool = [] {  // never destroyed: tasklets may end during static destruction
    auto* p = new tsan_fiber_pool;
    p->idle.reserve(tsan_fiber_pool_cap);  // give_fiber never allocates
    return p;
  }();
  return *pool;
}

void take_fiber(tasklet_impl* t) {
  {
    tsan_fiber_pool& p = fiber_pool();
    std::lock_guard lk(p.mu);
    if (!p.idle.empty()) {
      std::tie(t->tsan_fiber, t->tsan_fiber_lives) = p.idle.back();
      p.idle.pop_back();
      ++t->tsan_fiber_lives;
      return;
    }
  }
  t->tsan_fiber = __tsan_create_fiber(0);
  t->tsan_fiber_lives = 1;
}

void give_fiber(tasklet_impl* t) noexcept {
  void* f = std::exchange(t->tsan_fiber, nullptr);
  if (!f) return;
  if (t->tsan_fiber_lives < tsan_fiber_max_lives) {
    tsan_fiber_pool& p = fiber_pool();
    std::lock_guard lk(p.mu);
    if (p.idle.size() < tsan_fiber_pool_cap) {
      p.idle.emplace_back(f, t->tsan_fiber_lives);
      return;
    }
  }
  __tsan_destroy_fiber(f);
}
#endif

inline void before_jump([[maybe_unused]] tasklet_impl* from, [[maybe_unused]] tasklet_impl* to,
                        [[maybe_unused]] bool from_dies) noexcept {
#ifdef WEFT_ASAN
  const void* bottom = to->is_main ? to->asan_stack_bottom : to->stack.base;
  std::size_t size = to->is_main ? to->asan_stack_size : to->stack.size;
  __sanitizer_start_switch_fiber(from_dies ? nullptr : &from->asan_fake_stack, bottom, size);
#endif
#ifdef WEFT_TSAN
  __tsan_switch_to_fiber(to->tsan_fiber, 0);
  if (to->tsan_rewound) {
    to->tsan_rewound = false;
    for (int i = 0; i < tsan_rewound_frames; ++i) __tsan_func_entry(__builtin_return_address(0));
  }
#endif
}

// `self` has just been resumed; returns the tasklet that resumed it, with its context saved.
inline tasklet_impl* after_jump([[maybe_unused]] tasklet_impl* self, ctx::transfer_t t) noexcept {
  tasklet_impl* prev = static_cast<handoff*>(t.data)->from;
#ifdef WEFT_ASAN
  const void* bottom = nullptr;
  std::size_t size = 0;
  __sanitizer_finish_switch_fiber(self->asan_fake_stack, &bottom, &size);
  if (prev->is_main) {  // learn the thread stack's bounds, needed to switch back to main
    prev->asan_stack_bottom = bottom;
    prev->asan_stack_size = size;
  }
#endif
  prev->context = t.fctx;
  return prev;
}

[[noreturn]] void entry_trampoline(ctx::transfer_t t) noexcept {
  tasklet_impl* self = static_cast<handoff*>(t.data)->to;
  tasklet_impl* prev = after_jump(self, t);
  load_eh(self);
  tasklet_entry(prev, self);
}

}  // namespace

void context_save_eh(tasklet_impl* from) noexcept { save_eh(from); }

tasklet_impl* context_resumed(tasklet_impl* from, ctx::transfer_t t) noexcept {
  tasklet_impl* prev = after_jump(from, t);
  load_eh(from);
  return prev;
}

void context_stack_overflow_at_switch(const tasklet_impl* t) noexcept {
  // The size asked for (the rest is colouring room).
  report_stack_overflow((t->stack.size - 1) / 4096 * 4096, "found at a switch point, its stack pointer below the stack");
}

void context_prepare(tasklet_impl* t, stack_extent stack) {
  t->stack = stack;
  t->context = ctx::make_fcontext(stack.top(), stack.size, &entry_trampoline);
  t->eh_globals[0] = t->eh_globals[1] = nullptr;
  t->asan_fake_stack = nullptr;
  t->has_context = true;
#ifdef WEFT_TSAN
  take_fiber(t);
#endif
}

tasklet_impl* context_switch(tasklet_impl* from, tasklet_impl* to) {
  context_check_stack(from);
  return context_switch_unchecked(from, to);
}

tasklet_impl* context_switch_unchecked(tasklet_impl* from, tasklet_impl* to) {
  save_eh(from);
  handoff h{from, to};
  before_jump(from, to, false);
  context_prefetch_resumed_frames(to);
  return context_resumed(from, ctx::jump_fcontext(to->context, &h));
}

void context_exit(tasklet_impl* from, tasklet_impl* to) {
  handoff h{from, to};
  before_jump(from, to, true);
  context_prefetch_resumed_frames(to);
  ctx::jump_fcontext(to->context, &h);
  __builtin_unreachable();
}

void context_release([[maybe_unused]] tasklet_impl* t) noexcept {
#ifdef WEFT_TSAN
  if (!t->is_main) give_fiber(t);
#endif
  t->tsan_fiber = nullptr;
  t->context = nullptr;
}

void context_rewound([[maybe_unused]] tasklet_impl* t) noexcept {
#ifdef WEFT_TSAN
  // The old fiber's shadow stack holds the frames of the attempt that was rolled back: it ends a
  // life there, and the tasklet goes on with another fiber.
  give_fiber(t);
  take_fiber(t);
  t->tsan_rewound = true;
#endif
}

namespace {
// The header the C++ runtime puts before every thrown object: the Itanium C++ ABI's __cxa_exception
// (ABI §2.2.1; libstdc++ lays it out so), of which context_discard_catches needs the destructor, the
// chain link and the exception class. Checked against the running C++ runtime once
// (exception_layout_known) before anything is written through it.
struct cxa_exception_header {
  std::type_info* exception_type;
  void (*exception_destructor)(void*);
  void (*unexpected_handler)();
  void (*terminate_handler)();
  cxa_exception_header* next_exception;
  int handler_count;
  int handler_switch_value;
  const unsigned char* action_record;
  const unsigned char* language_specific_data;
  std::uintptr_t catch_temp;
  void* adjusted_ptr;
  _Unwind_Exception unwind_header;
};
constexpr std::uint64_t gnu_cxx_primary = 0x474e5543432b2b00ULL;  // "GNUCC++\0": thrown by a throw expression

struct layout_probe {
  int value = 7;
};

// Whether a thrown object's header is where, and what, cxa_exception_header says: throws one and
// looks at it from the catch block. Run once, on whatever thread first needs it, with that thread's
// own exception state (no tasklet's chain swapped in).
bool exception_layout_known() noexcept {
  static const bool known = [] {
    try {
      throw layout_probe{};
    } catch (layout_probe& caught) {
      const auto* h = static_cast<const cxa_exception_header*>(eh_globals()[0]);
      return h && static_cast<const void*>(h + 1) == static_cast<const void*>(&caught) &&
             h->exception_type == &typeid(layout_probe) && h->unwind_header.exception_class == gnu_cxx_primary &&
             h->handler_count == 1;
    }
    return false;
  }();
  return known;
}
// The reference count libstdc++ keeps before the header (__cxa_refcounted_exception: the count,
// then the header at the header's alignment), checked once: an exception_ptr taken in a catch block
// makes it 2, dropping that exception_ptr 1 again.
int* reference_count_of(cxa_exception_header* h) noexcept {
  return reinterpret_cast<int*>(reinterpret_cast<char*>(h) - alignof(cxa_exception_header));
}
bool reference_count_known() noexcept {
  static const bool known = [] {
    if (!exception_layout_known()) return false;
    try {
      throw layout_probe{};
    } catch (layout_probe& caught) {
      std::exception_ptr p = std::current_exception();
      if (exception_object_of(p) != static_cast<void*>(&caught)) return false;
      int* count = reference_count_of(static_cast<cxa_exception_header*>(static_cast<void*>(&caught)) - 1);
      const int with = __atomic_load_n(count, __ATOMIC_RELAXED);
      p = nullptr;
      return with == 2 && __atomic_load_n(count, __ATOMIC_RELAXED) == 1;
    }
    return false;
  }();
  return known;
}
}  // namespace

namespace {
// Set once check_exception_layout ran: from then on the checks are plain reads (their statics are
// initialised), safe inside the exception wraps, which must not throw a probe of their own.
std::atomic<bool> layout_checked{false};
bool layout_ready() noexcept { return layout_checked.load(std::memory_order_acquire) && reference_count_known(); }
// The top of this thread's caught list, if it is an object a throw expression made.
cxa_exception_header* top_caught_primary() noexcept {
  if (!layout_ready()) return nullptr;
  auto* h = static_cast<cxa_exception_header*>(eh_globals()[0]);
  return h && h->unwind_header.exception_class == gnu_cxx_primary ? h : nullptr;
}
}  // namespace

void context_check_exception_layout() noexcept {
  (void)reference_count_known();
  layout_checked.store(true, std::memory_order_release);
}

void* context_top_caught_object() noexcept {
  cxa_exception_header* h = top_caught_primary();
  return h ? h + 1 : nullptr;
}

void* context_end_catch_frees() noexcept {
  cxa_exception_header* h = top_caught_primary();
  // Its last handler (a rethrown one counts negative and lives on), and no exception_ptr holds it.
  if (!h || h->handler_count != 1 || __atomic_load_n(reference_count_of(h), __ATOMIC_RELAXED) != 1) return nullptr;
  return h + 1;
}

void* exception_object_of(const std::exception_ptr& e) noexcept {
  static_assert(sizeof(std::exception_ptr) == sizeof(void*));
  void* p;
  std::memcpy(&p, static_cast<const void*>(&e), sizeof p);
  return p;
}

void context_discard_attempt_exception(std::exception_ptr& e, const stack_snapshot* restored) noexcept {
  if (!e) return;
  if (!reference_count_known()) {
    e = nullptr;
    return;
  }
  void* object = exception_object_of(e);
  auto* h = static_cast<cxa_exception_header*>(object) - 1;
  if (__atomic_load_n(reference_count_of(h), __ATOMIC_RELAXED) == 1) {
    if (restored && snapshot_holds(*restored, object)) {
      // Moved out of an exception_ptr the restored stack holds again: that one owns the reference.
      alignas(std::exception_ptr) unsigned char kept[sizeof(std::exception_ptr)];
      new (kept) std::exception_ptr(std::move(e));  // never destroyed
      return;
    }
    // The attempt made it: its construction is rolled back, its destructor must not run.
    if (h->unwind_header.exception_class == gnu_cxx_primary) h->exception_destructor = nullptr;
  }
  e = nullptr;
}

void context_discard_catches(tasklet_impl* t) noexcept {
  // Thrown in the attempt (it started outside every catch block and with no exception in flight, or
  // it would not have been speculative), so the rollback undoes its construction: its destructor
  // must not run either (a user's destructor that printed or counted did so once per rolled-back
  // attempt, outside any transaction: a newcomer's program). Objects thrown again from an
  // exception_ptr (std::rethrow_exception: a dependent exception, another class) are older: left to
  // their owners.
  if (exception_layout_known())
    for (auto* h = static_cast<cxa_exception_header*>(t->eh_globals[0]); h; h = h->next_exception)
      if (h->unwind_header.exception_class == gnu_cxx_primary) h->exception_destructor = nullptr;
  context_end_catches(t);
}

void context_end_catches(tasklet_impl* t) noexcept {
  void** g = eh_globals();
  void* const thread_state[2] = {g[0], g[1]};
  g[0] = t->eh_globals[0];
  g[1] = t->eh_globals[1];
  // __cxa_end_catch ends the innermost handler of the top exception and pops it once its last
  // handler is gone, so this ends every handler of every exception in the chain, innermost first.
  while (g[0]) __cxa_end_catch();
  t->eh_globals[0] = g[0];
  t->eh_globals[1] = g[1];
  g[0] = thread_state[0];
  g[1] = thread_state[1];
}

void context_adopt_thread([[maybe_unused]] tasklet_impl* main) {
  main->started = main->has_context = true;
#ifdef WEFT_TSAN
  main->tsan_fiber = __tsan_get_current_fiber();
#endif
}

}  // namespace weft::detail
