// Stack pool: slabs of MAP_NORESERVE memory cut into equal stacks, a LIFO free list, and the
// guard-page fault handler.
//
// Invariants: every stack handed out lies in exactly one slab; a stack is either in use or on free_,
// never both; slabs are unmapped only when the pool is destroyed (a pool destroyed with stacks still
// in use leaks its slabs rather than pull memory from under a live tasklet).
//
// Guard slabs are also recorded in a fixed, append-only table read by the SIGSEGV handler. The
// handler may run at any time on any thread, so the table is written with release stores and read
// with acquire loads, never locked, and never shrinks (an entry of an unmapped slab is cleared).
#include "weft/detail/diagnostics.hpp"
#include "weft/gc.hpp"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

namespace weft::detail {

std::size_t page_size() noexcept {
  static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

namespace {

constexpr std::size_t max_slab_stacks = 4096;

// Stack colouring: each slot has this much room above the usable stack, and a stack's top sits a
// number of cache lines (its colour) below the slot's end. Without it every top was 64 KiB-aligned
// (68 KiB with a guard page: still the same L1 sets), so the hot top frames of thousands of tasklets
// competed for the same cache sets (issue 11 §6). The usable size stays what was asked for.
//
// Which sets a line uses in a physically indexed cache (L2, L3) depends, within a page, only on its
// offset in the page: tops at 24 offsets in the upper 1.5 KiB put the ~10 hot lines of every
// tasklet on ~34 of a page's 64 line offsets, so the frames of 2,000 tasklets (the sieve) had half
// of a 2 MiB L2 (16-way: 512 lines per offset, ~830 of them wanted). Tops over the whole page (64
// colours): sieve of 2,000 primes 0.88x the time (16 interleaved pairs, 0.83-0.91), level with
// Boost.Fiber's 16 KiB stacks (whose malloc'd stacks drift by 16 bytes each).
//
// The whole page has a cost: frames below a top low in its page spill onto the page below. Measured
// with gcc 12 at -O2 (stack painted below a blocked tasklet): the entry frames down to the
// tasklet's function ~360 bytes, a block and resume 280 bytes below that, a kill 1,935 (libgcc's
// unwinder; 5 KiB for the process's first throw, which sets up its tables). A second page is a
// second page fault (8-20 us on this project's VM, more than a thousand switches) and 4 KiB more per
// tasklet: with 64 colours for every stack, a million blocked tasklets took 4.4 s -> 17.4 s to tear
// down (1.09 M -> 1.65 M page faults). So:
// * a pool's first 4,096 stacks (wide_colour_stacks: while their tops can stay in a core's caches)
//   take 64 colours, and those whose top leaves less than 2,624 bytes of its page below it
//   (one_page_depth: 40 of the 64) have the page below populated with the top page — 10 bytes per
//   task more over a million (spawn 1M: 4,407 -> 4,417 bytes), no page fault more;
// * the stacks after them take 24 colours in the upper 1.5 KiB (narrow_colours), one page each:
//   `perf stat -e page-faults weft_workloads hackysack 2 100000` 14,421 faults (168,128 with 64
//   colours before the pool populated top pages, 121,251 with 32, 115,000 with none).
// A stack's colour is fixed by its slot's index in the pool and kept through the free list.
constexpr std::size_t colour_span = 4096;
constexpr std::size_t colour_step = 64;
constexpr std::size_t narrow_colours = 24;       // the upper 1.5 KiB of the top page
constexpr std::size_t wide_colours = 64;         // the whole top page
constexpr std::size_t wide_colour_stacks = 4096; // a pool's first stacks get wide colours
// A free stack is kept as its base (page-aligned) plus its colour, in the low bits.
static_assert(wide_colours <= 64 && narrow_colours <= wide_colours);
constexpr std::uintptr_t colour_mask = 63;
// The bytes a tasklet's frames take below its top when it is killed while blocked (see above).
constexpr std::size_t one_page_depth = colour_span - (narrow_colours - 1) * colour_step;

constexpr std::size_t colour_of_slot(std::size_t slot) noexcept {
  return slot < wide_colour_stacks ? slot % wide_colours : slot % narrow_colours;
}

// Guard pages and vm.max_map_count: each guard page splits its slab's mapping, and once the process
// reaches the limit every mmap fails — malloc's, a new thread's stack, our next slab. So guards stop
// while a quarter of the limit (at least 8,192 mappings) is still free for everything else; stacks
// made after that get only the stack-pointer check at switch points
// (context_check_stack, tasklet/include/weft/detail/context.hpp).
std::size_t map_count_limit() {
  static const std::size_t limit = [] {
    std::size_t v = 65530;  // the kernel's default
    if (std::FILE* f = std::fopen("/proc/sys/vm/max_map_count", "r")) {
      unsigned long x = 0;
      if (std::fscanf(f, "%lu", &x) == 1 && x > 0) v = x;
      std::fclose(f);
    }
    return v;
  }();
  return limit;
}
std::atomic<std::size_t> guard_pages{0};  // in the whole process

bool may_add_guard() noexcept {
  const std::size_t limit = map_count_limit();
  const std::size_t headroom = std::max<std::size_t>(limit / 4, 8192);
  return 2 * (guard_pages.load(std::memory_order_relaxed) + 1) + headroom <= limit;
}

// --- guard table for the fault handler ---------------------------------------------------------
struct guard_slab {
  std::atomic<std::uintptr_t> begin{0};
  std::atomic<std::uintptr_t> end{0};
  std::atomic<std::size_t> stride{0};
  std::atomic<std::size_t> stack_size{0};
};
constexpr std::size_t max_guard_slabs = 8192;
guard_slab guard_table[max_guard_slabs];
std::atomic<std::size_t> guard_count{0};
std::mutex guard_table_writers;  // serialises appends; never taken by the signal handler

void register_guard_slab(char* begin, std::size_t bytes, std::size_t stride, std::size_t stack_size) {
  std::lock_guard lock(guard_table_writers);
  std::size_t n = guard_count.load(std::memory_order_relaxed);
  if (n == max_guard_slabs) return;  // the handler then reports a plain segmentation fault
  guard_table[n].stride.store(stride, std::memory_order_relaxed);
  guard_table[n].stack_size.store(stack_size, std::memory_order_relaxed);
  guard_table[n].end.store(reinterpret_cast<std::uintptr_t>(begin + bytes), std::memory_order_relaxed);
  guard_table[n].begin.store(reinterpret_cast<std::uintptr_t>(begin), std::memory_order_relaxed);
  guard_count.store(n + 1, std::memory_order_release);  // pairs with the acquire in on_segv
}

void unregister_guard_slab(char* begin) {
  std::lock_guard lock(guard_table_writers);
  std::size_t n = guard_count.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < n; ++i)
    if (guard_table[i].begin.load(std::memory_order_relaxed) == reinterpret_cast<std::uintptr_t>(begin)) {
      guard_table[i].end.store(0, std::memory_order_relaxed);
      guard_table[i].begin.store(0, std::memory_order_relaxed);
    }
}

struct sigaction previous_segv;
std::atomic<fault_hook_fn> fault_hook{nullptr};

// The handler that was there before ours, for SIGFPE, SIGBUS, SIGILL (index sig).
struct sigaction previous_other[NSIG];

// Hands the fault to the handler installed before ours, or to the default action.
void chain(int sig, siginfo_t* info, void* uctx, const struct sigaction& previous) {
  if (previous.sa_flags & SA_SIGINFO) {
    if (previous.sa_sigaction) return previous.sa_sigaction(sig, info, uctx);
  } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN && previous.sa_handler != nullptr) {
    return previous.sa_handler(sig);
  }
  std::signal(sig, SIG_DFL);  // returning re-executes the instruction and dies with the default action
}

void on_other_fault(int sig, siginfo_t* info, void* uctx) {
  if (fault_hook_fn hook = fault_hook.load(std::memory_order_acquire)) hook(sig);
  chain(sig, info, uctx, previous_other[sig]);
}

void write_stderr(const char* s) {
  ssize_t ignored = ::write(STDERR_FILENO, s, std::strlen(s));
  (void)ignored;
}

void on_segv(int sig, siginfo_t* info, void* uctx) {
  if (fault_hook_fn hook = fault_hook.load(std::memory_order_acquire)) hook(sig);
  auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
  std::size_t n = guard_count.load(std::memory_order_acquire);  // pairs with register_guard_slab
  for (std::size_t i = 0; i < n; ++i) {
    std::uintptr_t b = guard_table[i].begin.load(std::memory_order_relaxed);
    std::uintptr_t e = guard_table[i].end.load(std::memory_order_relaxed);
    if (addr < b || addr >= e) continue;
    std::size_t stride = guard_table[i].stride.load(std::memory_order_relaxed);
    if ((addr - b) % stride >= stride - guard_table[i].stack_size.load(std::memory_order_relaxed)) break;
    report_stack_overflow(guard_table[i].stack_size.load(std::memory_order_relaxed) - colour_span, nullptr);
  }
  // Not ours: hand the fault to whoever was installed before (or the default action).
  chain(sig, info, uctx, previous_segv);
}

}  // namespace

void install_overflow_handler() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return;  // the sanitizer's own handler reports overflows
#else
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGSEGV, &sa, &previous_segv);
  });
  // The handler must not run on the overflowed stack: give this thread an alternate one (kept for
  // the thread's life; a thread that already has one keeps it).
  thread_local bool has_altstack = false;
  if (has_altstack) return;
  stack_t current{};
  if (::sigaltstack(nullptr, &current) == 0 && !(current.ss_flags & SS_DISABLE)) {
    has_altstack = true;
    return;
  }
  static constexpr std::size_t alt_size = 64 * 1024;
  thread_local struct alt_stack {
    void* mem = std::malloc(alt_size);
    ~alt_stack() {
      stack_t off{};
      off.ss_flags = SS_DISABLE;
      ::sigaltstack(&off, nullptr);
      std::free(mem);
    }
  } alt;
  stack_t ss{};
  ss.ss_sp = alt.mem;
  ss.ss_size = alt_size;
  if (alt.mem && ::sigaltstack(&ss, nullptr) == 0) has_altstack = true;
#endif
}

void install_fault_handlers(fault_hook_fn hook) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  (void)hook;
#else
  fault_hook.store(hook, std::memory_order_release);
  install_overflow_handler();  // SIGSEGV, and the thread's alternate stack
  static std::once_flag once;
  std::call_once(once, [] {
    for (int sig : {SIGFPE, SIGBUS, SIGILL}) {
      struct sigaction sa {};
      sa.sa_sigaction = on_other_fault;
      sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
      sigemptyset(&sa.sa_mask);
      ::sigaction(sig, &sa, &previous_other[sig]);
    }
  });
#endif
}

// One report per process. Two tasklets overflowing at once on two threads (a program whose every
// tasklet recursed too deep, at two workers) both get here: the second used to find SIGSEGV reset to
// its default action by the first and died with a bare segmentation fault before the first thread's
// report was out (a newcomer's program, up to 3 runs in 10). The second now waits for the first's
// abort; a fault inside the report itself (the same thread again) takes the default action.
static std::atomic<bool> overflow_reported{false};
__attribute__((tls_model("initial-exec"))) static constinit thread_local bool reporting_overflow = false;

void report_stack_overflow(std::size_t stack_size, const char* how) noexcept {
  if (reporting_overflow) {
    std::signal(SIGSEGV, SIG_DFL);
    abort_unwrapped();
  }
  reporting_overflow = true;
  if (overflow_reported.exchange(true)) {
    for (;;) ::pause();  // another thread is reporting; its abort ends the process
  }
  char msg[320];
  std::snprintf(msg, sizeof msg,
                "weft: fatal: stack overflow in a tasklet (stack size %zu bytes%s%s); raise weft::options::stack_size "
                "or WEFT_STACK_SIZE\n",
                stack_size, how ? "; " : "", how ? how : "");
  write_stderr(msg);
  abort_unwrapped();
}

namespace {

// A stack's first use writes its top page (the entry frame; a tasklet blocked in a channel operation
// uses ~0.6 KiB). As a page fault that costs 17-20 us on this project's VM (a trap into the guest
// kernel, then the hypervisor maps the page); asking the kernel to fill the page first
// (MADV_POPULATE_WRITE, Linux 5.14) saves the trap: measured on 100,000 pages 72 KiB apart (a
// stack's stride), touching them costs 1.65 s as faults, 0.23 s of madvise calls + 0.87-0.95 s of
// first touches when populated one call per page, 0.07-0.08 s + 0.83-0.85 s when populated with
// process_madvise(2), one call for up to `stack_pool::populate_batch` pages (Linux 6.13 accepts
// every advice for the calling process; older kernels refuse with EINVAL, and the pool then
// populates one page per call). So fresh stacks are populated a batch at a time, in the order
// allocate() hands them out: at most populate_batch - 1 pages (124 KiB) of a slab are populated
// and not yet used.
// Only never-used stacks are populated, each once: a stack that comes back through the free list is
// still mapped. On a kernel without MADV_POPULATE_WRITE the pages are faulted in as before.

#ifdef MADV_POPULATE_WRITE
std::atomic<bool> populate_unsupported{false};
std::atomic<bool> batch_unsupported{false};
std::atomic<bool> no_self_sentinel{false};

// process_madvise(2) on this process. Linux 6.15 takes PIDFD_SELF_THREAD (-10000: the calling
// thread, whose memory is the process's) and older kernels answer it with EBADF; there a pidfd is
// opened for the call and closed after it (a descriptor kept for later could be closed by the
// program, its number reused, or inherited by a child of fork that would then advise its parent).
long madvise_self(iovec* v, std::size_t n, int advice) noexcept {
  constexpr int pidfd_self_thread = -10000;
  if (!no_self_sentinel.load(std::memory_order_relaxed)) {
    const long r = ::syscall(SYS_process_madvise, pidfd_self_thread, v, n, advice, 0u);
    if (r >= 0 || errno != EBADF) return r;
    no_self_sentinel.store(true, std::memory_order_relaxed);
  }
  const long fd = ::syscall(SYS_pidfd_open, ::getpid(), 0);
  if (fd < 0) return -1;
  const long r = ::syscall(SYS_process_madvise, static_cast<int>(fd), v, n, advice, 0u);
  const int saved = errno;
  ::close(static_cast<int>(fd));
  errno = saved;
  return r;
}

// One range per call (the fallback).
void populate_ranges(const iovec* v, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n && !populate_unsupported.load(std::memory_order_relaxed); ++i)
    if (::madvise(v[i].iov_base, v[i].iov_len, MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
      populate_unsupported.store(true, std::memory_order_relaxed);
}
#endif

// Populates n page-aligned ranges (n <= stack_pool::populate_batch). Best effort: a page left out is
// faulted in at its first touch. Keeps errno (the caller's is a spawn in user code).
void populate(iovec* v, std::size_t n) noexcept {
#ifdef MADV_POPULATE_WRITE
  if (populate_unsupported.load(std::memory_order_relaxed)) return;
  const int saved_errno = errno;
  bool done = false;
  if (n > 1 && !batch_unsupported.load(std::memory_order_relaxed)) {
    // Before Linux 6.13 the advice is refused (EINVAL); before 5.10 the call or pidfd_open is
    // missing (ENOSYS); a seccomp filter may refuse either (EPERM). Then one range per call.
    done = madvise_self(v, n, MADV_POPULATE_WRITE) >= 0 || (errno != EINVAL && errno != ENOSYS && errno != EPERM);
    if (!done) batch_unsupported.store(true, std::memory_order_relaxed);
  }
  if (!done) populate_ranges(v, n);
  errno = saved_errno;
#else
  (void)v;
  (void)n;
#endif
}

}  // namespace

stack_pool::stack_pool(std::size_t stack_size, bool guard)
    : stack_size_((stack_size + page_size() - 1) / page_size() * page_size()),
      stride_(stack_size_ + colour_span + (guard ? page_size() : 0)),
      guard_(guard) {
  if (guard_) install_overflow_handler();
}

stack_pool::~stack_pool() {
  if (in_use_ != 0) {
    detail::diagnostics().warn("weft: stack pool destroyed with {} stacks in use; leaking its slabs", in_use_);
    return;
  }
  for (const slab& s : slabs_) {
    if (guard_) unregister_guard_slab(s.begin);
    ::munmap(s.begin, s.bytes);
    guard_pages.fetch_sub(s.guards, std::memory_order_relaxed);
  }
}

void stack_pool::grow() {
  std::size_t stacks = next_slab_stacks_;
  std::size_t bytes = stacks * stride_;
  void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw std::bad_alloc();
  char* begin = static_cast<char*>(mem);
  slabs_.push_back({begin, bytes, 0});
  reserved_ += bytes;
  const auto b = reinterpret_cast<std::uintptr_t>(begin);
  if (const std::uintptr_t lo = lo_.load(std::memory_order_relaxed); !lo || b < lo)
    lo_.store(b, std::memory_order_relaxed);
  hi_.store(std::max(hi_.load(std::memory_order_relaxed), b + bytes), std::memory_order_relaxed);
  next_slab_stacks_ = std::min(next_slab_stacks_ * 2, max_slab_stacks);
  if (guard_) {
    for (std::size_t i = 0; i < stacks; ++i) {
      if (!may_add_guard() || ::mprotect(begin + i * stride_, page_size(), PROT_NONE) != 0) {
        static std::atomic<bool> warned{false};
        if (!warned.exchange(true))
          detail::diagnostics().debug("weft: {} stacks have guard pages, as many as vm.max_map_count ({}) allows with "
                                     "room to spare; further stacks are checked for overflow at switch points",
                                     guard_pages.load(std::memory_order_relaxed), map_count_limit());
        break;
      }
      guard_pages.fetch_add(1, std::memory_order_relaxed);
      ++slabs_.back().guards;
    }
    register_guard_slab(begin, bytes, stride_, stack_size_ + colour_span);
  }
  // Push in reverse so that the lowest stack is handed out first.
  for (std::size_t i = stacks; i-- > 0;)
    free_.push_back(begin + i * stride_ + (stride_ - stack_size_ - colour_span) + colour_of_slot(total_stacks_ + i));
  total_stacks_ += stacks;
  free_.reserve(total_stacks_);  // so that release() never allocates
  fresh_ = populated_ = free_.back() - (reinterpret_cast<std::uintptr_t>(free_.back()) & colour_mask);
}

stack_extent stack_pool::allocate() {
  if (free_.empty()) grow();
  const auto decode = [this](char* entry) {
    const std::size_t colour = reinterpret_cast<std::uintptr_t>(entry) & colour_mask;
    // top: `colour` lines below the slot's end
    return stack_extent{entry - colour, stack_size_ + colour_span - colour * colour_step};
  };
  const stack_extent s = decode(free_.back());
  free_.pop_back();
  ++in_use_;
  if (s.base == fresh_) {
    fresh_ += stride_;
    if (s.base >= populated_) {  // the top pages of the next few fresh stacks of this slab, in one call
      const slab& sl = slabs_.back();
      // Stacks left in the slab from this one on (base is a guard page above its slot's start).
      const std::size_t left = (static_cast<std::size_t>(sl.begin + sl.bytes - s.base) + stride_ - 1) / stride_;
      const std::size_t n = std::min(left, populate_batch);
      // The next fresh stacks wait under this one in the free list, in order (grow() ran on an
      // empty list, and stacks released since sit above them).
      iovec v[populate_batch];
      for (std::size_t j = 0; j < n; ++j) {
        const stack_extent next = j == 0 ? s : decode(free_[free_.size() - j]);
        char* page = next.base + stack_size_ + colour_span - page_size();
        // A top low in its page leaves the frames of a kill's unwinder in the page below.
        const bool two = next.top() - page < static_cast<std::ptrdiff_t>(one_page_depth);
        v[j] = {two ? page - page_size() : page, (two ? 2 : 1) * page_size()};
      }
      populate(v, n);
      populated_ = s.base + n * stride_;
    }
  }
  return s;
}

void stack_pool::release(stack_extent s) noexcept {
  if (!s) return;
  --in_use_;
  const std::size_t colour = (stack_size_ + colour_span - s.size) / colour_step;
  free_.push_back(s.base + colour);  // capacity was reserved in grow(): never throws
}

}  // namespace weft::detail
