// The public surface of tasklets and of the scheduler's free functions: each operation is an intent
// handed to perform() (weft/detail/intent.hpp); flags are read straight from the control block.
#include <fmt/format.h>

#include "runtime.hpp"

namespace weft {

using detail::intent;
using detail::intent_kind;
using detail::perform;
using detail::tasklet_state;

const tasklet& tasklet::insert() const {
  intent in{.kind = intent_kind::insert, .target = impl_};
  perform(in);
  return *this;
}

const tasklet& tasklet::remove() const {
  intent in{.kind = intent_kind::remove, .target = impl_};
  perform(in);
  return *this;
}

void tasklet::run(std::source_location where) const {
  intent in{.kind = intent_kind::run, .target = impl_, .where = where};
  perform(in);
}

void tasklet::switch_to(std::source_location where) const {
  intent in{.kind = intent_kind::switch_to, .target = impl_, .where = where};
  perform(in);
}

void tasklet::kill(std::source_location where) const {
  if (!impl_) return;  // a dead target is a no-op too (§3.3), decided where the kill is applied
  tasklet keep(*this);  // the target must outlive its own unwinding even if our caller drops us
  intent in{.kind = intent_kind::raise, .target = impl_, .kill = true,
            .exception = std::make_exception_ptr(tasklet_exit{}), .where = where};
  perform(in);
}

void tasklet::raise_exception(std::exception_ptr e, std::source_location where) const {
  if (!e) throw std::invalid_argument("raise_exception needs an exception");
  tasklet keep(*this);
  intent in{.kind = intent_kind::raise, .target = impl_, .exception = std::move(e), .where = where};
  perform(in);
}

// Flags and names are committed scheduler state: observe_scheduler() makes a speculative segment
// wait for the head before reading them (DESIGN.md §4.4).
bool tasklet::alive() const noexcept {
  if (!impl_) return false;
  detail::observe_scheduler();
  return !detail::dead_or_orphaned(impl_);
}
bool tasklet::blocked() const noexcept {
  if (!impl_) return false;
  detail::observe_scheduler();
  return impl_->state == tasklet_state::blocked;
}
bool tasklet::scheduled() const noexcept {
  if (!impl_) return false;
  detail::observe_scheduler();
  return impl_->state == tasklet_state::runnable || impl_->state == tasklet_state::blocked;
}
bool tasklet::paused() const noexcept {
  if (!impl_) return false;
  detail::observe_scheduler();
  return impl_->state == tasklet_state::paused && !detail::orphaned(impl_);
}
bool tasklet::is_main() const noexcept { return impl_ && impl_->is_main; }
bool tasklet::is_current() const noexcept {
  if (!impl_ || !impl_->owner) return false;
  detail::runtime& r = detail::this_runtime();
  if (!r.is_parallel() && impl_->owner_thread != std::this_thread::get_id()) return false;
  return detail::running_tasklet(r) == impl_;
}

std::string tasklet::name() const {
  if (!impl_) return {};
  detail::observe_scheduler();
  return detail::display_name(*impl_);
}

std::uint64_t tasklet::id() const {
  if (!impl_) throw std::logic_error("an empty tasklet handle has no id");
  return impl_->id;
}

void tasklet::set_name(std::string name) const {
  if (!impl_) throw std::logic_error("cannot name an empty tasklet handle");
  intent in{.kind = intent_kind::set_name, .target = impl_, .text = &name};
  perform(in);
}

void detail::run_at(std::source_location where) {
  intent in{.kind = intent_kind::run_main, .where = where};
  perform(in);
}

void detail::schedule_at(std::source_location where) {
  intent in{.kind = intent_kind::yield, .where = where};
  perform(in);
}

void detail::schedule_remove_at(std::source_location where) {
  intent in{.kind = intent_kind::remove_self, .where = where};
  perform(in);
}

tasklet getcurrent() {
  detail::runtime& r = detail::this_runtime();
  return tasklet::from_impl(detail::running_tasklet(r));
}
tasklet getmain() { return tasklet::from_impl(detail::this_runtime().main); }
int getruncount() {
  detail::runtime& r = detail::this_runtime();
  detail::observe_scheduler();
  return static_cast<int>(r.ring_size);
}

}  // namespace weft
