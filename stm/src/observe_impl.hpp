// Private: the observer record and the emit helper used inside weft.
#pragma once

#include <atomic>
#include <new>

#include "weft/observe.hpp"

namespace weft::detail {

struct observer_record {
  observer_fn fn;
  void* context;
  const observer_record* older;  // every record ever made stays reachable (readers may still hold one)
};
extern std::atomic<const observer_record*> observer_slot;

inline bool observing() noexcept { return observer_slot.load(std::memory_order_relaxed) != nullptr; }

/// Calls the observer, if any, outside the transaction: its allocations are its own, not the attempt's.
void notify_slow(const observer_record* r, const event& e) noexcept;
inline void notify(const event& e) noexcept {
  if (const observer_record* r = observer_slot.load(std::memory_order_acquire)) [[unlikely]]
    notify_slow(r, e);
}

}  // namespace weft::detail
