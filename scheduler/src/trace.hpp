// WEFT_TRACE=FILE (DESIGN.md §7), private to scheduler/: ordered mode's segments as a Chrome
// trace-event JSON file (the format Perfetto and chrome://tracing open). One process per runtime
// (in the order they started), one lane (thread) per worker — lane 0 is the runtime's own thread —
// and one slice per segment attempt, named by how it ended: "commit", "commit (inevitable)",
// "abort: conflict", "abort: injected", "abort: tasklet changed", "abort: drained", "replayed"
// (WEFT_CHECK=replay's first run), "parked" (the part of a segment run before it waited for the head).
// A slice runs from the jump into the tasklet to its switch point; what a lane shows between slices
// is dispatch, snapshots, commits and idle time. Main's own code is not a segment: it runs on lane 0
// between them. The guard's fallback to serial is an instant event on lane 0 with its reason.
//
// Cost: nothing when WEFT_TRACE is unset (a branch on a flag of the runtime at each segment's end).
// When set, two clock reads a segment (~50 ns each here) and 32 bytes a segment attempt, kept in
// memory (the first 4,000,000 attempts of each runtime; later ones are counted, not kept) and written
// when the runtime ends — weft::shutdown(), the end of its thread, std::exit — the whole file each
// time, with every runtime so far.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace weft::detail {

enum class trace_outcome : std::uint8_t {
  commit,
  commit_inevitable,
  abort_conflict,
  abort_injected,
  abort_changed,
  abort_drained,
  replayed,
  parked,
};

struct trace_span {
  std::uint64_t begin_ns;  // steady clock
  std::uint64_t end_ns;
  std::uint64_t tasklet;   // its id
  std::uint32_t worker;    // lane
  trace_outcome outcome;
};

/// One runtime's trace while it runs: written under its commit lock only.
struct trace_log {
  static constexpr std::size_t max_spans = 4'000'000;
  std::vector<trace_span> spans;
  std::uint64_t dropped = 0;       // attempts past max_spans
  std::uint64_t fallback_ns = 0;   // when the guard fell back to serial (0: it did not)
  std::string fallback_reason;
  void add(const trace_span& s) {
    if (spans.size() < max_spans)
      spans.push_back(s);
    else
      ++dropped;
  }
};

/// Called as a runtime starts. Returns 0 when WEFT_TRACE is unset or empty, else the runtime's number
/// in the trace (its process id there: 1, 2, ... in the order runtimes started in this process). The first runtime that starts with a given path
/// creates (truncates) the file and writes an empty trace to it; a new path starts a new trace. A
/// serial runtime gets a warning (it runs no segments). Throws std::invalid_argument naming
/// WEFT_TRACE when the file cannot be written. Thread-safe.
std::uint32_t trace_runtime_started(bool ordered, unsigned workers);
/// Called once as traced runtime `id` ends (or at std::exit): adds its spans and rewrites the file.
/// Never throws (a write error is a warning on stderr). Thread-safe.
void trace_runtime_ended(std::uint32_t id, trace_log&& log) noexcept;
/// Steady-clock nanoseconds, the clock of trace_span (and of ordered mode's segment timings).
inline std::uint64_t trace_now_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

}  // namespace weft::detail
