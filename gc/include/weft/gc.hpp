// weft/gc.hpp — memory owned by the runtime: tasklet stacks (and, later, epoch reclamation and
// transactional allocation, DESIGN.md §2).
//
// Stacks are carved out of large anonymous slabs mapped with MAP_NORESERVE, so a stack costs only
// the pages its tasklet actually touches (one page for a tasklet blocked in a channel operation).
// One mapping per stack would stop near 32,000 tasklets (vm.max_map_count = 65,530), so slabs hold
// many stacks. Freed stacks go back to a LIFO free list and are reused hot: first touch of a fresh
// page costs 12-17 µs on the VMs weft is measured on. Optional guard pages (one PROT_NONE page below
// each stack, on by default in debug builds) turn an overflow into a clear fatal message.
//
// A stack_pool belongs to one runtime (one thread) and is not synchronised.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace weft {

/// Counters of the calling thread's runtime, for leak checks and memory accounting.
struct resource_counts {
  std::size_t live_tasklets = 0;       ///< tasklets inserted at least once and not dead (main excluded)
  std::size_t control_blocks = 0;      ///< tasklet control blocks not yet destroyed (main included)
  std::size_t stacks_in_use = 0;       ///< stacks handed to tasklets and not yet returned
  std::size_t stacks_cached = 0;       ///< stacks returned to the pool, ready for reuse
  std::size_t stack_bytes_reserved = 0;///< address space of all slabs (not memory: MAP_NORESERVE)
  /// Channels whose first operation was this runtime's, not yet destroyed. A channel lives while a
  /// handle, a tasklet waiting in it, or a tasklet a hand-off woke from it holds it (the last until
  /// that tasklet waits in another channel or ends).
  std::size_t channels = 0;
};

namespace detail {

/// The usable part of one stack: [base, base + size); the guard page, if any, is just below base.
struct stack_extent {
  char* base = nullptr;
  std::size_t size = 0;
  char* top() const noexcept { return base + size; }
  bool contains(const void* p) const noexcept {
    const auto a = reinterpret_cast<std::uintptr_t>(p), b = reinterpret_cast<std::uintptr_t>(base);
    return a >= b && a - b < size;
  }
  explicit operator bool() const noexcept { return base != nullptr; }
};

class stack_pool {
 public:
  /// stack_size is rounded up to whole pages; guard adds one inaccessible page below each stack.
  stack_pool(std::size_t stack_size, bool guard);
  ~stack_pool();
  stack_pool(const stack_pool&) = delete;
  stack_pool& operator=(const stack_pool&) = delete;

  /// Never-used stacks have their top page populated (filled by the kernel before the first touch,
  /// Linux 5.14 and later) this many at a time, with one system call where the kernel allows it
  /// (Linux 6.13); so at most populate_batch - 1 populated top pages wait unused in the pool.
  static constexpr std::size_t populate_batch = 32;

  /// Throws std::bad_alloc when the address space cannot be reserved.
  stack_extent allocate();
  void release(stack_extent s) noexcept;

  std::size_t stack_size() const noexcept { return stack_size_; }
  bool guarded() const noexcept { return guard_; }
  std::size_t in_use() const noexcept { return in_use_; }
  std::size_t cached() const noexcept { return free_.size(); }
  std::size_t reserved_bytes() const noexcept { return reserved_; }
  /// Whether p lies between the lowest and the highest address of the pool's slabs (a cheap filter:
  /// true for every stack of the pool, and perhaps for other memory mapped between its slabs).
  /// Thread-safe: the bounds only widen, and a thread that may write into a stack of the pool
  /// learnt of that stack through some synchronisation after the slab was added.
  bool spans(const void* p) const noexcept {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    return a >= lo_.load(std::memory_order_relaxed) && a < hi_.load(std::memory_order_relaxed);
  }

 private:
  struct slab {
    char* begin;
    std::size_t bytes;
    std::size_t guards;  // guard pages made in it (each costs up to two kernel mappings)
  };
  void grow();

  std::size_t stack_size_;
  std::size_t stride_;          // stack_size_ + guard page
  bool guard_;
  std::size_t next_slab_stacks_ = 64;  // doubles up to a cap: small programs map little
  std::vector<slab> slabs_;
  std::vector<char*> free_;     // LIFO: the most recently used (hot) stack first
  char* fresh_ = nullptr;       // the next never-used stack of the newest slab (allocate() populates it)
  char* populated_ = nullptr;   // fresh stacks below this one have their top page populated already
  std::size_t total_stacks_ = 0;
  std::size_t in_use_ = 0;
  std::size_t reserved_ = 0;
  std::atomic<std::uintptr_t> lo_{0}, hi_{0};  // spans(); written under the owner's lock, read by any thread
};

/// Installs (once per process, and an alternate signal stack once per thread) the SIGSEGV handler
/// that reports a fault in a guard page as a tasklet stack overflow and aborts. Not used under
/// AddressSanitizer, which reports overflows itself.
void install_overflow_handler();
/// Writes "weft: fatal: stack overflow in a tasklet (stack size N bytes…)" to stderr with write(2)
/// (async-signal-safe) and aborts; `how` (may be null) says how it was found.
[[noreturn]] void report_stack_overflow(std::size_t stack_size, const char* how) noexcept;

/// Called first by weft's SIGSEGV/SIGFPE/SIGBUS/SIGILL handlers, on the faulting thread (async-signal
/// context). It either does not return (the fault was taken care of: ordered mode rolls back a
/// speculative segment whose stale reads led it into a fault) or returns, and the fault is reported
/// as usual. Set once by the scheduler.
using fault_hook_fn = void (*)(int sig) noexcept;
/// Installs the handlers of those four signals (once per process; previous handlers are chained)
/// with `hook` first, and this thread's alternate signal stack. No-op under the sanitizers, whose
/// own handlers report faults.
void install_fault_handlers(fault_hook_fn hook);

std::size_t page_size() noexcept;

}  // namespace detail
}  // namespace weft
