// Ordered mode (DESIGN.md §4), private to scheduler/: the entry points runtime.cpp, api.cpp and
// apply.cpp call. The machinery itself (workers, segments, dispatch, commit order) is ordered.cpp.
#pragma once

#include <cstdio>
#include <exception>
#include <mutex>
#include <optional>
#include <source_location>
#include <string_view>

#include "runtime.hpp"
#include "weft/detail/context.hpp"
#include "weft/detail/stm_core.hpp"

namespace weft::detail {

/// Whether the program was linked with weft's -Wl,--wrap=... options (WEFT_WRAP_OPTIONS: exit,
/// __cxa_guard_acquire, std::current_exception and exception_ptr's reference count; the weft::weft
/// CMake target adds them; irrevocable.cpp). Ordered mode refuses to start without them.
bool program_linked_with_wraps() noexcept;
/// WEFT_GUARD_US (options.cpp): the mean segment below which the guard falls back, in ns (2,500 if
/// unset); throws std::invalid_argument naming the variable for a bad value.
std::uint64_t guard_segment_ns();
/// Starts the worker threads of a runtime made in ordered mode (from the runtime's constructor).
void ordered_start(runtime& r);
/// Stops and joins them; called by the main thread (shutdown, thread exit) with main running.
void ordered_stop(runtime& r) noexcept;
/// perform() in ordered mode: a speculative segment ends here; main applies at once.
op_status ordered_perform(runtime& r, intent& in);
/// The last segment of a tasklet ends with its exit intent.
[[noreturn]] void ordered_exit(tasklet_impl* self, std::exception_ptr escaped);
/// At the start of a segment: whether it throws the tasklet's pending exception (only an inevitable
/// segment at the head reads it; a speculative one never does).
bool ordered_takes_pending(tasklet_impl* self) noexcept;
/// The tasklet whose code the calling thread runs (main on the main thread while main runs).
tasklet_impl* ordered_running() noexcept;
/// weft::print and commit_sink in ordered mode: buffered in a speculative segment, direct at the head.
/// `where`: the weft::print call, if it is one (kept for WEFT_CHECK=replay's report).
void ordered_output(std::FILE* stream, std::string_view text, const std::source_location* where = nullptr);
/// apply() is about to change `t`, which is not the committing tasklet (kill, raise, remove): its
/// segment in flight, if any, is aborted. Returns true if that segment is running right now on some
/// thread (it is then doomed: aborted when it ends), false if t has nothing in flight any more.
bool ordered_abort_in_flight(runtime& r, tasklet_impl* t) noexcept;
/// apply() rotates the ring from `from` (the head) to `to` (kill, raise, run, switch_to, an escaped
/// exception, a send that resumes its receiver): the tasklets from `from` up to `to` go to the tail.
/// Those whose segment is in flight and that came before main in serial order, and now come after it,
/// have their segment aborted: main's code, which runs before them now, may change plain data they
/// read (README: nothing after main in serial order starts while main holds back). Under the commit
/// lock; O(1) for a send's rotation, at most O(window) otherwise.
void ordered_rotating(runtime& r, tasklet_impl* from, tasklet_impl* to) noexcept;
/// resources() and similar reads by main: the commit lock, held while reading committed counters.
std::mutex& ordered_lock(runtime& r);
/// run_stats() of an ordered runtime; the numbers of the last one stopped (nullopt if none).
run_statistics ordered_stats(runtime& r);
std::optional<run_statistics> last_ordered_stats();
/// std::exit called on a thread of an ordered run (scheduler/src/exit.cpp): a speculative segment
/// first waits for its turn (it may be rolled back instead, and never returns); then the other threads
/// are stopped at their next switch point; when main exits, the run drains to serial state. No-op on
/// other threads and in serial state.
void ordered_before_exit() noexcept;
/// abort(), a failed assert(), quick_exit() or _Exit() called by a tasklet's segment on a thread of
/// an ordered run (irrevocable.cpp): the segment first waits for its turn (or is rolled back and
/// never returns), then commits what it did and wrote so far. No-op elsewhere.
void ordered_before_abort() noexcept;
/// Set from __cxa_allocate_exception until the object is thrown, freed, or held by an exception_ptr
/// (std::make_exception_ptr), and through __cxa_end_catch (which may destroy and free the caught
/// object), on this thread (irrevocable.cpp): while it is set an exception object is known to no one
/// but the frame making or destroying it, and a doomed segment is not stopped at a new or delete (it
/// would leak the object).
__attribute__((tls_model("initial-exec"))) extern constinit thread_local bool exception_being_made;
/// The thread's marks of an exception being made or destroyed (bits of tasklet_impl::exception_flux),
/// which belong to the code running on it: saved with a tasklet that leaves, given back to it where it
/// resumes, whichever thread that is.
inline std::uint8_t exception_flux_here() noexcept {
  return static_cast<std::uint8_t>((exception_being_made ? 1 : 0) | (exception_storage_dying ? 2 : 0));
}

/// Gives a tasklet's marks back to the thread it runs on. Out of line: called after a switch, it must
/// not reuse a thread-local address computed before it (the tasklet may resume on another thread).
[[gnu::noinline]] void set_exception_flux_here(std::uint8_t f) noexcept;

/// Serial state after the guard's fallback for short segments (runtime::probe_countdown is not 0):
/// measures the mean time between the last probe_every switch points of tasklets other than main;
/// true (and the run is to go parallel again: ordered_state::returning) when it and the three
/// before it are long enough (the first two after a drain do not count).
bool ordered_probe(runtime& r) noexcept;
/// The same state, at a switch point of main, after its operation was applied: switches to `next`
/// (unless it is main) and returns when main runs again; if the run went parallel meanwhile, main's
/// thread works until main may run, as in ordered_perform.
void ordered_main_serial_switch(runtime& r, tasklet_impl* next);
/// The same state, at a switch point of `self`, after its operation was applied; `next` runs next by
/// the serial rule (perform's serial path, inline: hackysack's and the sieve's switch points at two
/// workers after the fallback were 1.2x slower with this out of line). Keeps self's exception marks
/// with it, which serial state does not (it passed them from tasklet to tasklet: a tasklet saved
/// another's as its own) and ordered mode needs if the run goes parallel while self waits here, and
/// gives them back where it resumes. Counts down to the next probe; if it finds the segments long,
/// switches to main instead (wherever main waits: its loop or ordered_main_serial_switch), which
/// takes the run parallel; self then resumes at the head (return_to_parallel), on whichever thread.
[[gnu::always_inline]] inline void ordered_serial_switch(runtime& r, tasklet_impl* self, tasklet_impl* next) {
  // While probing, the thread's marks are 0 whenever a tasklet resumes, but for the marks it gives
  // itself back: the rare tasklet with marks takes them along (and off the thread).
  const std::uint8_t marks = exception_flux_here();
  self->exception_flux = marks;
  if (marks) [[unlikely]]
    exception_being_made = exception_storage_dying = false;
  if (self == r.main) [[unlikely]] {
    ordered_main_serial_switch(r, next);
    return;
  }
  tasklet_impl* to = next;
  if (--r.probe_countdown == 0 && ordered_probe(r)) [[unlikely]]
    to = r.main;
  if (to == self) {
    context_check_stack(self);
    return;
  }
  serial_transfer(r, self, to);
  // Resumed in serial state, self is on the main thread, as before the switch: its marks go back
  // here. Resumed by a worker after a return to parallel, enter() gave them back on that thread.
  if (self->exception_flux && !self->owner->is_parallel()) [[unlikely]] {
    exception_being_made = (self->exception_flux & 1) != 0;
    exception_storage_dying = (self->exception_flux & 2) != 0;
  }
}
/// What the C++ runtime does with exception objects in a speculative segment on this thread
/// (irrevocable.cpp's wraps; no-ops elsewhere): allocated (made), thrown or rethrown, caught by a
/// handler, freed (gone: without a throw, or by the end of its last handler), being destroyed at its
/// last handler's end (dying; null when that ends). A rollback frees those still made, in flight or
/// dying, and the tvars the attempt made in any it allocated (ordered.cpp, segment::exceptions).
void ordered_before_exception_allocation() noexcept;  ///< waits for the head if no room is left to report one more
void ordered_exception_made(void* obj, std::size_t size) noexcept;
void ordered_exception_thrown(void* obj) noexcept;
void ordered_exception_caught(void* obj) noexcept;
void ordered_exception_gone(void* obj) noexcept;
void* ordered_exception_dying(void* obj) noexcept;  ///< returns the one it replaces (nested: give it back)
/// A worker thread's runtime (worker threads own none), or nullptr.
runtime* ordered_thread_runtime() noexcept;

}  // namespace weft::detail
