// weft/detail/thread_exit.hpp — per-thread state released when its thread exits (private to weft).
//
// A C++ thread_local's destructor runs once, at a point among the thread's other thread_local
// destructors; state that a *later* destructor (a user's thread_local or pthread key destructor
// that runs a transaction) brings back would then never be released. A thread_exit_slot is a POSIX
// thread-specific key instead: its destructor runs after every C++ thread_local destructor of the
// thread, and again (up to PTHREAD_DESTRUCTOR_ITERATIONS rounds) when something re-arms the slot
// while the thread's key destructors are running. The main thread runs no key destructors: its state
// lives until the process ends.
#pragma once

#include <cstdlib>

#include <pthread.h>

namespace weft::detail {

[[noreturn]] void abort_unwrapped() noexcept;  // weft/detail/diagnostics.hpp

class thread_exit_slot {
 public:
  /// `release(value)` runs on the exiting thread for the value it armed last (never for nullptr).
  /// Use one slot per kind of state, made on first use (a function-local static).
  explicit thread_exit_slot(void (*release)(void*)) noexcept {
    if (::pthread_key_create(&key_, release) != 0) abort_unwrapped();  // out of keys: nothing sane to do
  }
  thread_exit_slot(const thread_exit_slot&) = delete;
  thread_exit_slot& operator=(const thread_exit_slot&) = delete;
  /// Arms the slot on the calling thread: `release(value)` runs when it exits.
  void arm(void* value) noexcept { ::pthread_setspecific(key_, value); }

 private:
  pthread_key_t key_{};
};

}  // namespace weft::detail
