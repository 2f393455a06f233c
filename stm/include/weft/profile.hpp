// weft/profile.hpp — the conflict profiler (DESIGN.md §7): where time is lost to conflicts.
//
//   weft::start_profiling();
//   ... run the program ...
//   weft::profile p = weft::stop_profiling();
//   std::puts(weft::format_profile(p).c_str());
//
// or run any program with WEFT_PROFILE=1: profiling starts before main and the report is printed
// (spdlog, level info) when the program exits.
//
// The profiler is an observer (weft/observe.hpp): every aborted attempt's conflict record is added
// to its site — the same kind, object and pair of source locations — with the attempt's duration as
// time lost. Installing another observer with set_observer() takes the hook from the profiler
// (what it collected so far is kept).
#pragma once

#include <cstdint>
#include <source_location>
#include <string>
#include <vector>

#include "weft/observe.hpp"
#include "weft/stm.hpp"

namespace weft {

/// All the aborts with the same cause: kind, object and the two source locations.
struct conflict_site {
  conflict_kind kind = conflict_kind::read_write;
  std::string object;            ///< the tvar's name, or "tvar@0x..." when it has none
  std::source_location read_at;  ///< where the losing transaction read (or wrote) it
  std::source_location write_at; ///< where the winner last wrote it (empty if unknown)
  std::uint64_t aborts = 0;
  std::uint64_t time_lost_ns = 0;  ///< sum of the aborted attempts' durations
  std::uint32_t threads = 0;       ///< distinct threads that lost attempts here
};

struct profile {
  std::vector<conflict_site> sites;  ///< largest time lost first
  std::uint64_t conflicts = 0;       ///< aborted attempts with a conflict record
  std::uint64_t time_lost_ns = 0;
  std::uint64_t retry_waits = 0;     ///< retry() waits
  std::uint64_t inevitable = 0;      ///< transactions that became inevitable
  std::vector<std::pair<std::string, std::uint64_t>> inevitable_reasons;  ///< most frequent first
  stm_stats stats;                   ///< weft::stats() when the profile was taken
};

/// Installs the profiler as weft's observer and clears what it collected before.
void start_profiling();
/// What the profiler has collected so far (it goes on collecting).
profile profile_snapshot();
/// Removes the profiler from the observer hook (if it still holds it) and returns what it collected.
profile stop_profiling();
/// A plain-text table: totals, the `max_sites` costliest sites, per-thread commits and aborts, and
/// (in a program that ran tasklets in parallel ordered mode) the run's segments and whether it fell
/// back to serial state, whose tasklets run outside the STM and count as no commit.
std::string format_profile(const profile& p, std::size_t max_sites = 20);

namespace detail {
/// A line the scheduler adds to format_profile's text (or "" for none). Thread-safe; one at a time.
using profile_note_fn = std::string (*)();
void set_profile_note(profile_note_fn note) noexcept;
}  // namespace detail

}  // namespace weft
