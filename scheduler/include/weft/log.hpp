// weft/log.hpp — an spdlog sink for tasklet code in ordered mode.
//
//   auto log = std::make_shared<spdlog::logger>("game", std::make_shared<weft::commit_sink>());
//   weft::spawn([&] { log->info("player {} joined", id); });   // written when the segment commits
//
// In a speculative segment (ordered mode, DESIGN.md §4) a formatted line is kept with the segment's
// record and written when the segment commits, in commit order, like weft::print: a rolled-back
// segment's lines are dropped, so nothing is logged twice or lost. Elsewhere (one worker, main, an
// inevitable segment) it is written at once. Use a logger whose sinks are all commit sinks (another
// sink would write at once, from a segment that may be rolled back).
#pragma once

#include <cstdio>
#include <mutex>

#include <spdlog/sinks/base_sink.h>

#include "weft/scheduler.hpp"

namespace weft {

class commit_sink final : public spdlog::sinks::base_sink<std::mutex> {
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
