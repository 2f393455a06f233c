// weft/observe.hpp — the one event enum and the one observer hook (DESIGN.md §7).
//
// Everything that watches weft — the conflict profiler, the trace writer, tests — plugs into a single
// hook. With no observer installed an event costs one relaxed load and a branch, and no timestamps are
// taken. The observer is called on the thread where the event happens, outside any weft lock; it must
// be thread-safe and must not start transactions or switch tasklets.
#pragma once

#include <cstdint>
#include <source_location>
#include <thread>

namespace weft {

enum class event_kind : std::uint8_t {
  tx_commit,      ///< a transaction committed
  tx_abort,       ///< a transaction attempt was rolled back (conflict != nullptr when it was a conflict)
  tx_retry_wait,  ///< retry(): the transaction waits for a tvar it read to change
  inevitable,     ///< a transaction became inevitable (`reason` says why)
  gc,             ///< the epoch GC freed memory
};

enum class conflict_kind : std::uint8_t {
  read_write,   ///< something read was overwritten by a transaction that committed first
  write_write,  ///< a tvar to be written stayed locked by another committer
  inevitable,   ///< waited for, or lost to, the inevitable transaction
};

/// What one abort cost and why (the raw material of the conflict profiler).
struct conflict_record {
  conflict_kind kind;
  const void* object = nullptr;       ///< the tvar
  const char* name = nullptr;         ///< its name, if it was given one
  std::source_location read_at;       ///< where this transaction read (or wrote) it
  std::source_location write_at;      ///< where the transaction that won last wrote it
  std::uint64_t time_lost_ns = 0;     ///< duration of the aborted attempt (0 when not measured)
  std::thread::id thread;
};

struct event {
  event_kind kind;
  const conflict_record* conflict = nullptr;
  const char* reason = nullptr;  ///< inevitable: the reason given
  std::uint64_t count = 0;       ///< gc: objects freed
};

using observer_fn = void (*)(const event& e, void* context);

/// Installs the observer (nullptr removes it). Attempt durations are measured only while one is set.
void set_observer(observer_fn fn, void* context = nullptr);

}  // namespace weft
