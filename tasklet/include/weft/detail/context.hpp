// weft/detail/context.hpp — execution contexts of tasklets (private to weft).
//
// The tasklet module is the only place that knows Boost.Context (its jump is inline here, for the
// serial hot path: context_switch_inline; everything else is in tasklet/src). It uses the raw
// make_fcontext/jump_fcontext pair, not boost::context::fiber: rollback (DESIGN.md §5) resumes the
// same saved context a second time after restoring the stack, and a destroyed fiber would unwind.
//
// Protocol: the running tasklet `from` calls context_switch(from, to); when some tasklet later
// switches back to `from`, context_switch returns the tasklet that did so, whose own context has just
// been saved in its control block. A tasklet that has never run starts in tasklet_entry(prev, self),
// defined by the scheduler. A dying tasklet leaves with context_exit and is never resumed; whoever
// runs next sees it as `prev` and may then release its stack (nobody is running on it any more).
//
// Also here: the per-tasklet C++ exception-handling state (the thread's "caught exceptions" chain
// must follow the tasklet, or a switch inside a catch block corrupts it) and the sanitizer fiber
// annotations, compiled in only for ASan/TSan builds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>

#include <boost/context/detail/fcontext.hpp>

#include "weft/detail/tasklet_impl.hpp"

namespace weft::detail {

class stack_snapshot;

/// Gives a tasklet that has never run its first context on `stack`.
void context_prepare(tasklet_impl* t, stack_extent stack);
/// Suspends `from` (the running tasklet) and resumes `to`; returns when `from` is resumed.
tasklet_impl* context_switch(tasklet_impl* from, tasklet_impl* to);
/// The same without the stack-pointer check (context_check_stack), for a jump made away from the
/// tasklet's stack: a rollback from a fault handler runs on the thread's alternate signal stack.
tasklet_impl* context_switch_unchecked(tasklet_impl* from, tasklet_impl* to);
/// Leaves the dead tasklet `from` for good and resumes `to`.
[[noreturn]] void context_exit(tasklet_impl* from, tasklet_impl* to);
/// Frees what a dead tasklet's context holds apart from its stack (sanitizer fiber state).
void context_release(tasklet_impl* t) noexcept;
/// After restore_stack: the sanitizers' view of the tasklet's stack restarts with it (TSan: a fresh
/// fiber, whose shadow call stack the rolled-back frames do not fill up). No-op in other builds.
void context_rewound(tasklet_impl* t) noexcept;
/// Makes the thread's own stack the context of its main tasklet.
void context_adopt_thread(tasklet_impl* main);
/// Ends the catch blocks the suspended tasklet `t` is inside (its saved chain of caught exceptions),
/// as leaving them would: each exception whose last handler ends is destroyed and freed. For a
/// rolled-back attempt that ended inside a catch block: the rollback makes that catch never have
/// happened, and the exception object (malloc'd by the C++ runtime, outside weft's allocation log)
/// would otherwise be lost. Leaves `t` with an empty chain. An exception still in flight (a switch
/// point in a destructor run by unwinding) is not in the chain and stays as it is; so does a
/// std::exception_ptr reference the attempt took (the object then outlives the rollback: a leak,
/// never a use after free). Runs on any thread; the thread's own exception state is untouched.
void context_end_catches(tasklet_impl* t) noexcept;
/// context_end_catches for a rolled-back attempt that ended inside catch blocks: the exceptions it
/// threw and caught there are freed without running their destructors (the rollback undid their
/// construction). Exceptions rethrown from a std::exception_ptr are older and ended as usual. Falls
/// back to context_end_catches if the C++ runtime's exception header is not the Itanium ABI's.
void context_discard_catches(tasklet_impl* t) noexcept;
/// Drops e, the exception an intent of a rolled-back attempt holds (raise_exception, send_exception,
/// kill), as the rollback requires (ordered mode; `restored`: the stack the rollback brings back, or
/// null). Held only there (a count of one): made by the attempt, its destructor is not run (its
/// construction is rolled back: a destructor that printed or counted did so once per rolled-back
/// attempt), unless the restored stack holds it — moved out of an exception_ptr the segment found on
/// its stack, which owns the reference again (freeing it left the re-run raising a freed
/// exception). Otherwise its count is dropped as usual. Without the expected C++ runtime layout
/// (checked once), it is dropped as usual.
void context_discard_attempt_exception(std::exception_ptr& e, const stack_snapshot* restored) noexcept;
/// Checks once that the C++ runtime lays out its exception headers as the Itanium ABI says (it
/// throws a probe); until it has run, the two functions below answer null. Call it outside any
/// tasklet (the ordered runtime's start does).
void context_check_exception_layout() noexcept;
/// The object of the innermost exception this thread is handling, if a throw expression made it (not
/// a dependent exception of std::rethrow_exception, not a foreign one), else null.
void* context_top_caught_object() noexcept;
/// The object the next __cxa_end_catch on this thread destroys and frees: the innermost caught
/// exception when this is its last handler and no exception_ptr holds it; else null.
void* context_end_catch_frees() noexcept;
/// The exception object e refers to (libstdc++'s exception_ptr is that one pointer), or null.
void* exception_object_of(const std::exception_ptr& e) noexcept;

/// Overflow without a guard page (stacks beyond the vm.max_map_count budget, or WEFT_STACK_GUARD=0):
/// checked at every switch point (perform, context_switch). A tasklet whose stack pointer is below its
/// stack's lowest address, or within 256 bytes of it (a jump saves registers below it), has written
/// into the slot below: the program is stopped there, before the damage spreads, with the same
/// message as a guard-page fault. One compare per switch and no memory (a canary word at each stack's
/// base cost every tasklet a resident page: the million-tasklet test went from 4.9 to 9.0 KB per
/// tasklet). An overflow that unwinds before the next switch point is not seen; guard pages see all.
[[noreturn, gnu::cold]] void context_stack_overflow_at_switch(const tasklet_impl* t) noexcept;
/// The calling thread's stack pointer now.
[[gnu::always_inline]] inline std::uintptr_t context_stack_pointer() noexcept {
#if defined(__x86_64__)
  std::uintptr_t sp;
  asm("mov %%rsp, %0" : "=r"(sp));  // (__builtin_frame_address makes the caller keep a frame pointer)
  return sp;
#else
  return reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
#endif
}
[[gnu::always_inline]] inline void context_check_stack(const tasklet_impl* t) noexcept {
  const std::uintptr_t sp = context_stack_pointer();
  // Main and a thread's home context have no base (0): never below it.
  if (sp < reinterpret_cast<std::uintptr_t>(t->stack.base) + 256) [[unlikely]]
    context_stack_overflow_at_switch(t);
}

/// What a jump carries: who left and who was meant to run. It lives on the leaving tasklet's stack,
/// which stays intact until the resumed side has read it (a dead tasklet's stack is released only
/// after that, by its successor).
struct context_handoff {
  tasklet_impl* from;
  tasklet_impl* to;
};

// The resumed tasklet's stack is usually cold (thousands of tasklets, each last run long ago): its saved
// registers and the frames it returns through right after the jump (the switch path up to the user's
// channel call, about 250 bytes) miss the cache one after another, each `ret` a mispredicted return
// (the return stack buffer holds the other stack's addresses) that serialises the next miss. Asking
// for those lines before the jump overlaps the misses: sieve (2,000 tasklets in a chain) ran 22%
// faster with 4 lines (6, 8 and more: no better; 16: worse).
constexpr int context_resumed_frame_lines = 4;
[[gnu::always_inline]] inline void context_prefetch_resumed_frames(const tasklet_impl* to) noexcept {
  const char* sp = static_cast<const char*>(to->context);
  for (int i = 0; i < context_resumed_frame_lines; ++i) __builtin_prefetch(sp + 64 * i);
}

/// Halves of context_switch_inline (defined in context.cpp): the thread's C++ exception state into
/// `from` before the jump; after it, `from`'s side of the hand-over (it returns the tasklet that
/// resumed `from`, whose context it saves) and the exception state back. Out of line, so that no
/// thread-local address computed before the jump is reused after it (a tasklet may resume on
/// another thread).
void context_save_eh(tasklet_impl* from) noexcept;
tasklet_impl* context_resumed(tasklet_impl* from, boost::context::detail::transfer_t t) noexcept;

/// context_switch for the serial hot path (perform): inline, so that the suspended tasklet's stack
/// keeps no frame of the switch code itself, only jump_fcontext's saved registers above the caller's
/// frame (one call, one return and one cold stack line fewer per resume; with the channel operation
/// inline as well: sieve of 2,000 primes 344 -> 310 ms, hackysack K=1,000 238 -> 198 ms, medians
/// of interleaved runs on one core). Sanitizer builds use context_switch, which
/// annotates the jump.
[[gnu::always_inline]] inline tasklet_impl* context_switch_inline(tasklet_impl* from, tasklet_impl* to) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return context_switch(from, to);
#else
  context_check_stack(from);
  context_save_eh(from);
  context_handoff h{from, to};
  context_prefetch_resumed_frames(to);
  const boost::context::detail::transfer_t t = boost::context::detail::jump_fcontext(to->context, &h);
  return context_resumed(from, t);
#endif
}

/// Defined by the scheduler: the first code a tasklet runs, on its own stack. `prev` is the tasklet
/// that switched to it.
[[noreturn]] void tasklet_entry(tasklet_impl* prev, tasklet_impl* self);

/// A copy of the used part of a suspended tasklet's stack, [context, top), plus the registers saved
/// there and its exception-handling state: restoring it makes the tasklet resume as if nothing it did
/// since the snapshot had run (no unwinding, no destructors). Buffers are reused across snapshots.
class stack_snapshot {
 public:
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return context_ == nullptr; }

 private:
  friend void snapshot_stack(const tasklet_impl&, stack_snapshot&);
  friend void restore_stack(tasklet_impl&, const stack_snapshot&);
  friend bool snapshot_refresh(stack_snapshot&, const void*, std::size_t) noexcept;
  friend bool snapshot_holds(const stack_snapshot&, const void*) noexcept;
  void* context_ = nullptr;
  void* eh_globals_[2] = {nullptr, nullptr};
  std::unique_ptr<std::byte[]> bytes_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

/// t must be suspended (started, not running, not main).
void snapshot_stack(const tasklet_impl& t, stack_snapshot& into);
void restore_stack(tasklet_impl& t, const stack_snapshot& from);
/// Copies the n bytes now at `at` into the snapshot, if they lie in the part it saved: a tvar on the
/// tasklet's stack that another segment's commit changed keeps its committed state when the stack
/// is restored. Returns whether it did.
bool snapshot_refresh(stack_snapshot& snap, const void* at, std::size_t n) noexcept;
/// Whether the saved stack holds the pointer value p in an aligned word.
bool snapshot_holds(const stack_snapshot& snap, const void* p) noexcept;

}  // namespace weft::detail
