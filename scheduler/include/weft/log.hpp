// weft/log.hpp — an spdlog sink for tasklet code in ordered mode.
//
//   auto log = std::make_shared<spdlog::logger>("game", std::make_shared<weft::commit_sink>());
//   weft::spawn([&] { log->info("player {} joined", id); });   // written when the segment commits
//
// In a speculative segment (ordered mode, DESIGN.md §4) a formatted line is kept with the segment's
// record and written when the segment commits, in commit order, like weft::print: a rolled-back
// segment's lines are dropped, so nothing is logged twice or lost. Elsewhere (one worker, main, an
// inevitable segment) it is written at once. Use a logger whose sinks are all commit sinks (another
// sink would write at once, from a segment that may be rolled back), and without enable_backtrace: a
// rolled-back segment is not stopped inside a commit sink's lock (detail::sink_mutex), but the
// backtrace buffer is filled under a lock of spdlog's own, which such a stop would leave locked. A
// custom pattern flag or formatter runs inside the sink's lock: it must not read a tvar (a conflict
// found there rolls the segment back with the lock held).
#pragma once

#include <cstdio>
#include <mutex>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/base_sink-inl.h>  // (the compiled spdlog has base_sink for std::mutex only)

#include "weft/scheduler.hpp"

namespace weft {

namespace detail {
class alloc_log;
/// The lock of commit_sink (spdlog's base_sink takes it around formatting and writing a line). Held
/// by a speculative segment, it also holds that segment's stops: a segment doomed by a commit
/// meanwhile is not stopped at a `new` or `delete` inside the lock (the pattern formatter grows its
/// buffer there), but at its next one after unlock(). Stopped inside, the rollback (which restores
/// the stack without unwinding) left the mutex locked, and the next line logged by any tasklet waited
/// for ever (newcomer round 24: lines over spdlog's 250-byte inline buffer, 1 run in 5 at two
/// workers). Thread-safe, as std::mutex; lock() and unlock() are paired on one thread with no switch
/// point between them.
class sink_mutex {
 public:
  void lock();
  bool try_lock();
  void unlock() noexcept;

 private:
  void hold() noexcept;
  std::mutex mutex_;
  alloc_log* held_ = nullptr;  // whose stops the holder holds (under mutex_)
};
}  // namespace detail

class commit_sink final : public spdlog::sinks::base_sink<detail::sink_mutex> {
 public:
  /// Writes to `stream` (stderr by default; it must outlive the sink).
  explicit commit_sink(std::FILE* stream = stderr) noexcept : stream_(stream) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    detail::write_output_to(stream_, std::string_view(line.data(), line.size()));
  }
  void flush_() override { std::fflush(stream_); }

 private:
  std::FILE* stream_;
};

}  // namespace weft
