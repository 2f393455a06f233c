// weft/scheduler.hpp — the runtime: options, the runnable ring, and Stackless' module functions.
//
// The runtime is implicit per thread, as in Stackless: the code running in a thread's main() (or
// thread function) when it first uses weft is that thread's main tasklet. All semantics follow
// ../shared/stackless/SEMANTICS.md; see DESIGN.md §3. Tasklets belong to the thread that made them
// (run/insert/kill of another thread's tasklet: "can't switch to a different thread."); channels
// may be shared by threads (weft/channel.hpp, SEMANTICS.md §5b).
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <optional>
#include <source_location>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>
#include <utility>

#include <fmt/format.h>

#include "weft/errors.hpp"
#include "weft/gc.hpp"
#include "weft/tasklet.hpp"

namespace weft {

/// How tasklet segments run (DESIGN.md §4).
enum class mode {
  /// One thread runs the tasklets one after another (Stackless itself). The default with one worker.
  serial,
  /// Segments (the code between two switch points) run speculatively on `workers` threads as
  /// transactions and commit in the order one worker would run them: output, channel traffic,
  /// exceptions, ids and memory are identical to serial. The default with several workers. With
  /// one worker it runs every segment speculatively (to measure that cost).
  ordered,
  /// Not built yet (a later issue): asking for it throws std::invalid_argument.
  relaxed,
};

/// Process-wide settings. Set them with configure() before weft is first used; the environment
/// (WEFT_WORKERS, WEFT_MODE, WEFT_ABORT_INJECT, WEFT_SEED, WEFT_STACK_SIZE, WEFT_STACK_GUARD)
/// overrides them, for experiments. A bad value in a variable throws std::invalid_argument naming it
/// (from configure(), configuration() and weft's first use): counts and seeds are whole numbers,
/// WEFT_STACK_SIZE bytes with an optional K, M or G, switches (WEFT_STACK_GUARD, WEFT_GUARD,
/// WEFT_STATS) 0 or 1. WEFT_TRACE=FILE writes a Chrome trace-event timeline of ordered mode's
/// segments to FILE when a runtime ends (README, "When it does not pay"); a FILE that cannot be
/// written throws std::invalid_argument naming WEFT_TRACE at the runtime's start.
struct options {
  /// Threads that run segments: the main thread plus workers - 1 worker threads (DESIGN.md §4.1).
  unsigned workers = 1;
  /// Default (nullopt): serial with one worker, ordered with more, or with abort_inject or
  /// replay_every set (they act on speculative segments; with serial mode they are an error).
  std::optional<weft::mode> mode = std::nullopt;
  /// Ordered mode: the probability (0..1) that a finished segment is aborted and run again although
  /// nothing conflicted. Output must not change: this is how a breach of the memory contract
  /// (DESIGN.md §5) shows up. The decision is a hash of (seed, tasklet id, segment number, attempt),
  /// so a run is reproducible.
  double abort_inject = 0.0;
  /// Seeds abort injection.
  std::uint64_t seed = 0;
  /// WEFT_CHECK=replay[:N] (ordered mode; N defaults to 1): every Nth segment that starts at the head
  /// of the ring runs twice from its snapshot, and the two records (ending operation, tvar writes,
  /// output, handle copies) must agree; a difference is reported with the tasklet (and, for a tvar
  /// write, the source line of the write) and the program aborts. It finds code whose two runs from
  /// the same state do different things — it read plain state that the first run (or another
  /// thread) changed — which injection misses when the effect never reaches the output (DESIGN.md
  /// §4.7.9). A breach whose two runs happen to do the same (a plain counter incremented and not
  /// read back in the segment) is not reported: its results then differ from a plain run's. 0: off.
  unsigned replay_every = 0;
  /// Usable bytes of each tasklet stack, rounded up to whole pages. Stacks are reserved, not
  /// committed: a tasklet costs only the pages it touches. Deep recursion or large locals inside a
  /// tasklet need more; an overflow hits the guard page (when on) and aborts with a clear message.
  std::size_t stack_size = 64 * 1024;
  /// One inaccessible page below each stack: an overflow aborts with "weft: fatal: stack overflow in a
  /// tasklet ...". Default: on, in every build. Each guard page costs a kernel mapping, so guards stop
  /// while a quarter of vm.max_map_count (at least 8,192 mappings) is still free for the rest of the
  /// program (~24,500 stacks at the default 65,530); later stacks, and all of them when off, are
  /// checked at every switch point instead (a stack pointer below the stack: same message, "found at a
  /// switch point"; one compare per switch, ~1% on ping-pong).
  std::optional<bool> stack_guard = std::nullopt;
};

/// Sets the options. Throws std::logic_error if a runtime is already running in some thread (call
/// it first in main(), or after shutdown()). Throws std::invalid_argument for unusable values,
/// including those the WEFT_ variables make unusable (serial mode with WEFT_WORKERS=2: the message
/// names the variable); the options are then left as they were.
void configure(const options& o);
/// The options in force (after environment overrides).
options configuration();

namespace detail {
void run_at(std::source_location where);
void schedule_at(std::source_location where);
void schedule_remove_at(std::source_location where);
struct run_fn {
  void operator()(std::source_location where = std::source_location::current()) const { run_at(where); }
};
struct schedule_fn {
  void operator()(std::source_location where = std::source_location::current()) const { schedule_at(where); }
};
struct schedule_remove_fn {
  void operator()(std::source_location where = std::source_location::current()) const { schedule_remove_at(where); }
  template <class T>
  T operator()(T value, std::source_location where = std::source_location::current()) const {
    schedule_remove_at(where);
    return value;
  }
};
}  // namespace detail

// The three are function objects, not functions, so that they take the caller's
// std::source_location (for WEFT_CHECK=replay's reports, like every switch point: a defaulted last
// argument, never passed by hand) and can still be passed where a callable with no arguments is
// expected (`weft::spawn(weft::schedule)`, `std::thread(weft::run)`).

/// stackless.run(): the caller leaves the ring (paused) and the other tasklets run until none is
/// runnable (tasklets still blocked on channels are fine). May be called from any tasklet; the calls
/// nest: the innermost waiting run() returns first, and an exception escaping a tasklet is thrown
/// from it (SEMANTICS.md §1.6, §3). A switch point: not allowed inside weft::atomically.
inline constexpr detail::run_fn run{};
/// The next tasklet runs; the caller goes to the tail of the ring.
inline constexpr detail::schedule_fn schedule{};
/// The caller leaves the ring (paused) until something inserts it again; schedule_remove(value)
/// returns `value` when the caller resumes.
inline constexpr detail::schedule_remove_fn schedule_remove{};
tasklet getcurrent();
tasklet getmain();
/// Tasklets in the ring, the current one included (main is not counted while it waits in run()).
int getruncount();

/// What ordered mode did in the calling thread's runtime (or in the last one that ended, after
/// shutdown()): the numbers that say where parallel time went (DESIGN.md §4, §7).
struct run_statistics {
  weft::mode mode = weft::mode::serial;
  unsigned workers = 1;
  /// Segment attempts run, committed or not (one parked for the head and resumed there counts once;
  /// WEFT_CHECK=replay's first runs and a drain's dropped segments count, and are no abort of the kinds
  /// below).
  std::uint64_t segments = 0;
  std::uint64_t commits = 0;          ///< segments committed
  std::uint64_t aborts_conflict = 0;  ///< read a tvar that a predecessor in commit order changed
  std::uint64_t aborts_injected = 0;  ///< abort injection (options::abort_inject)
  std::uint64_t aborts_changed = 0;   ///< a committed kill, raise or remove changed the tasklet meanwhile
                                      ///< (the shutdown's kills too: a program that never kills may count some)
  /// Finished or parked segments rolled back while they waited, by the fallback's drain or because
  /// they held back the reclamation of memory (a tasklet replacing tvar values in a long chain at
  /// the head while they waited for their turn): no abort of the kinds above; in per_thread's aborts.
  std::uint64_t dropped = 0;
  std::uint64_t inevitable = 0;       ///< committed segments that ran inevitable at the head
  /// Time inside segments per attempt, µs (main's own code excluded): every segment is timed while
  /// they are long, a random 1 in 16 while they are shorter than 2 µs (a clock read costs as much as a
  /// short segment).
  double mean_segment_us = 0;
  double aborts_per_commit = 0;       ///< all kinds
  /// The guard (DESIGN.md §4.7.11) drained the run and it went on in serial state on one thread:
  /// segments were too short for parallelism to pay, or conflicts too frequent. WEFT_GUARD=0 turns
  /// the guard off.
  bool fell_back_to_serial = false;
  std::string fallback_reason;  ///< the last fallback's
  /// After a fallback for short segments, serial state measures the time between the tasklets'
  /// switch points every 64 of them (twice as many after each return that ended in another
  /// fallback); where four measures in a row (after two that settle the drain) find them long
  /// enough (WEFT_GUARD_US, 2.5 µs), the run goes parallel again and the guard judges it afresh.
  /// How many times it did.
  std::uint64_t returns_to_parallel = 0;
  /// Wall-clock time in serial state after fallbacks, to now (or to the run's end), during which the
  /// main thread ran the program as one worker does; not in per_thread's times (segments,
  /// committing, idle), which cover the parallel parts.
  double serial_ms = 0;
  struct thread_counts {
    /// Segments this thread ran (one parked and resumed by another thread counts for that one),
    /// and how many of them committed and aborted, whichever thread did the commit or the abort.
    std::uint64_t segments = 0, commits = 0, aborts = 0;
    double busy_ms = 0;    ///< inside segments (estimated like mean_segment_us)
    /// Between segments: committing (validation, write-back, intents, hooks), dispatch, snapshots.
    double commit_ms = 0;
    double idle_ms = 0;    ///< waiting for work (nothing in the dispatch window could start)
  };
  std::vector<thread_counts> per_thread;  ///< [0] is the main thread
};
/// Thread-safe; O(workers). With WEFT_STATS=1 the same numbers are logged (spdlog, info) when an
/// ordered runtime ends.
run_statistics run_stats();

/// Ends the calling thread's runtime: kills the remaining tasklets (ring order, then blocked ones in
/// channel order, then paused ones) so that their stacks unwind, and frees the stacks. Returns the
/// counts measured after the kills (no live tasklets, no stacks in use, unless a tasklet refused to
/// die). Called automatically when the thread exits; must be called from the main tasklet, outside
/// any transaction (std::logic_error otherwise). weft may be used again afterwards (a fresh runtime
/// starts). A thread that ends while a tasklet runs or inside a transaction (std::exit there) ends
/// its runtime without unwinding: nothing can switch to the tasklets.
resource_counts shutdown();
/// Counts of the calling thread's runtime. These count resources, not scheduler state: live_tasklets
/// is the answer one worker gives (committed state), but in ordered mode stacks_in_use also counts
/// the stacks of segments running speculatively on other threads (a tasklet's first segment takes
/// its stack before it commits), and control_blocks includes blocks whose last handles sit in old
/// tvar values the epoch GC has not freed yet (one worker frees them later than ordered mode). So
/// read them for leak checks and capacity, not for output that must match across modes; shutdown()
/// frees the retired values first and returns the same counts in every mode.
resource_counts resources();

namespace detail {
void write_output(std::string_view text);
/// write_output from weft::print at `where` (WEFT_CHECK=replay names the print whose text differs).
void write_output(std::string_view text, const std::source_location& where);

/// weft::print's format string: fmt's (checked against the arguments at compile time; fmt::runtime(s)
/// for one known only at run time), and where the call is.
template <class... Args>
struct located_format_string {
  fmt::format_string<Args...> format;
  std::source_location where;
  template <class S>
    requires std::is_convertible_v<const S&, fmt::string_view>
  consteval located_format_string(const S& s, std::source_location w = std::source_location::current())
      : format(s), where(w) {}
  /// One checked already (a function of the program's own that forwards its format string).
  located_format_string(fmt::format_string<Args...> s, std::source_location w = std::source_location::current())
      : format(s), where(w) {}
  located_format_string(decltype(fmt::runtime(fmt::string_view())) s,
                        std::source_location w = std::source_location::current())
      : format(s), where(w) {}
};
/// Like write_output, to `stream` (weft::commit_sink).
void write_output_to(std::FILE* stream, std::string_view text);
}

/// Formats like fmt::print and writes to standard output. With one worker it writes at once; in
/// ordered mode a speculative segment's output is kept with its record and written when it commits,
/// in commit order (nothing twice, nothing lost when it is rolled back); main and inevitable segments
/// write at once. Each write is flushed (one write(2) per call, as Go's fmt.Print): output reaches a
/// file or pipe while the program runs, and no exit path (an uncaught exception, std::exit, a fatal
/// signal) loses it. That costs ~2 us per call on a VM against ~0.2 us buffered: a loop that prints
/// thousands of lines should format them into one call (a committed segment's output is one write).
/// With a format string known only at run time write `weft::print(fmt::runtime(s), ...)`, qualified:
/// after `using weft::print;` an unqualified call also finds fmt::print (argument-dependent lookup on
/// fmt::runtime's type), and the two are ambiguous.
template <class... Args>
void print(detail::located_format_string<std::type_identity_t<Args>...> format, Args&&... args) {
  detail::write_output(fmt::format(format.format, std::forward<Args>(args)...), format.where);
}

}  // namespace weft
