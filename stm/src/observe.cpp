// The observer hook (weft/observe.hpp). The pair (function, context) is published as one pointer to
// an immutable record, so a reader never sees a function with another observer's context; records
// are never freed (observers are installed a handful of times per process).
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <utility>

#include "observe_impl.hpp"
#include "weft/detail/epoch.hpp"
#include "weft/detail/stm_core.hpp"

namespace weft {

namespace detail {
std::atomic<const observer_record*> observer_slot{nullptr};

namespace {
void report_gc(std::size_t freed) noexcept {
  event e{event_kind::gc};
  e.count = freed;
  notify(e);
}
}  // namespace

void notify_slow(const observer_record* r, const event& e) noexcept {
  alloc_log_pause pause;
  transaction* tx = std::exchange(current_tx, nullptr);
  try {
    r->fn(e, r->context);
  } catch (...) {
    // an observer must not throw; a throwing one is ignored rather than corrupt the transaction
  }
  current_tx = tx;
}
}  // namespace detail

namespace {
std::mutex history_lock;  // protects history
const detail::observer_record* history = nullptr;
}  // namespace

void set_observer(observer_fn fn, void* context) {
  const detail::observer_record* rec = nullptr;
  if (fn) {
    auto* r = static_cast<detail::observer_record*>(std::malloc(sizeof(detail::observer_record)));
    if (!r) throw std::bad_alloc();
    std::lock_guard lock(history_lock);
    r->fn = fn;
    r->context = context;
    r->older = history;
    detail::side_tables_used.store(true, std::memory_order_relaxed);  // tvars must now leave the tables
    detail::epoch_freed_hook.store(&detail::report_gc, std::memory_order_release);
    history = r;
    rec = r;
  }
  detail::observer_slot.store(rec, std::memory_order_release);  // pairs with the acquire in notify()
}

}  // namespace weft
