// WEFT_TRACE (DESIGN.md §7): the process-wide sink of the runtimes' traces and the JSON writer.
// See trace.hpp for what a trace shows and what it costs.
#include "trace.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include <fmt/format.h>

#include "weft/detail/alloc_log.hpp"
#include "weft/detail/diagnostics.hpp"

namespace weft::detail {

namespace {

struct traced_runtime {
  std::uint32_t id;   // what trace_runtime_started returned (unique in the process)
  std::uint32_t pid;  // its number in the file: 1, 2, ... in the order they started
  unsigned workers;
  bool ordered;
  bool ended = false;
  trace_log log;
};

struct sink {
  std::mutex mu;
  std::string path;          // the trace being written ("" before the first)
  std::uint64_t origin_ns = 0;  // ts 0 of the file: when its first runtime started
  std::uint32_t next_id = 1;
  std::uint32_t next_pid = 1;
  std::vector<traced_runtime> runtimes;
  bool warned_serial = false;
};

sink& the_sink() {
  static auto* s = new sink;  // never destroyed: runtimes end in thread exits and at std::exit
  return *s;
}

void append_escaped(fmt::memory_buffer& out, std::string_view text) {
  for (char c : text) {
    switch (c) {
      case '"': out.append(std::string_view("\\\"")); break;
      case '\\': out.append(std::string_view("\\\\")); break;
      case '\n': out.append(std::string_view("\\n")); break;
      case '\t': out.append(std::string_view("\\t")); break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          fmt::format_to(std::back_inserter(out), "\\u{:04x}", static_cast<unsigned>(c));
        else
          out.push_back(c);
    }
  }
}

struct outcome_look {
  const char* name;
  const char* colour;  // chrome://tracing's reserved colour names (Perfetto colours by name)
};
outcome_look look_of(trace_outcome o) {
  switch (o) {
    case trace_outcome::commit: return {"commit", "good"};
    case trace_outcome::commit_inevitable: return {"commit (inevitable)", "olive"};
    case trace_outcome::abort_conflict: return {"abort: conflict", "terrible"};
    case trace_outcome::abort_injected: return {"abort: injected", "bad"};
    case trace_outcome::abort_changed: return {"abort: tasklet changed", "bad"};
    case trace_outcome::abort_drained: return {"abort: drained", "grey"};
    case trace_outcome::replayed: return {"replayed", "yellow"};
    case trace_outcome::parked: return {"parked", "grey"};
  }
  return {"segment", "generic_work"};
}

double micros_since(std::uint64_t origin, std::uint64_t ns) {
  return ns > origin ? static_cast<double>(ns - origin) / 1e3 : 0.0;
}

// The whole file, from what the sink holds (its lock held). One event a line. Written in pieces of
// about 1 MiB (4 million slices are ~600 MB of JSON) to FILE.partial, renamed over FILE when complete:
// a reader never sees half a trace.
void write_file(sink& s) {
  const std::string partial = s.path + ".partial";
  std::FILE* f = std::fopen(partial.c_str(), "w");
  if (!f) {
    diagnostics().warn("WEFT_TRACE: cannot write {}: {}", partial, std::strerror(errno));
    return;
  }
  bool ok = true;
  fmt::memory_buffer out;
  auto write_out = [&] {
    ok = ok && std::fwrite(out.data(), 1, out.size(), f) == out.size();
    out.clear();
  };
  out.append(std::string_view("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n"));
  bool first = true;
  auto begin_event = [&] {
    if (out.size() >= (std::size_t{1} << 20)) write_out();
    if (!first) out.append(std::string_view(",\n"));
    first = false;
  };
  for (const traced_runtime& r : s.runtimes) {
    begin_event();
    fmt::format_to(std::back_inserter(out),
                   R"({{"ph":"M","name":"process_name","pid":{},"args":{{"name":"weft runtime {}: {}, {} worker{}{}{}"}}}})",
                   r.pid, r.pid, r.ordered ? "ordered" : "serial (no segments)", r.workers, r.workers == 1 ? "" : "s",
                   r.ended ? "" : " (still running when written)",
                   r.log.dropped ? fmt::format(" ({} later segment attempts not recorded)", r.log.dropped) : std::string());
    for (unsigned w = 0; w < r.workers; ++w) {
      begin_event();
      fmt::format_to(std::back_inserter(out), R"({{"ph":"M","name":"thread_name","pid":{},"tid":{},"args":{{"name":"{}"}}}})",
                     r.pid, w, w == 0 ? std::string("runtime's thread") : fmt::format("worker {}", w));
    }
    for (const trace_span& sp : r.log.spans) {
      const outcome_look look = look_of(sp.outcome);
      const std::uint64_t end = sp.end_ns > sp.begin_ns ? sp.end_ns : sp.begin_ns;
      begin_event();
      fmt::format_to(std::back_inserter(out),
                     R"({{"ph":"X","cat":"segment","name":"{}","cname":"{}","pid":{},"tid":{},"ts":{:.3f},"dur":{:.3f},"args":{{"tasklet":{}}}}})",
                     look.name, look.colour, r.pid, sp.worker, micros_since(s.origin_ns, sp.begin_ns),
                     static_cast<double>(end - sp.begin_ns) / 1e3, sp.tasklet);
    }
    if (r.log.fallback_ns) {
      begin_event();
      fmt::format_to(std::back_inserter(out),
                     R"({{"ph":"i","s":"p","cat":"guard","name":"fallback to serial","pid":{},"tid":0,"ts":{:.3f},"args":{{"reason":")",
                     r.pid, micros_since(s.origin_ns, r.log.fallback_ns));
      append_escaped(out, r.log.fallback_reason);
      out.append(std::string_view("\"}}"));
    }
  }
  out.append(std::string_view("\n]}\n"));
  write_out();
  if (std::fclose(f) != 0 || !ok || std::rename(partial.c_str(), s.path.c_str()) != 0) {
    diagnostics().warn("WEFT_TRACE: writing {} failed: {}", s.path, std::strerror(errno));
    std::remove(partial.c_str());
  }
}

}  // namespace

std::uint32_t trace_runtime_started(bool ordered, unsigned workers) {
  const char* path = std::getenv("WEFT_TRACE");
  if (!path || !*path) return 0;
  alloc_log_pause pause;  // the sink's memory is the process's, never a transaction's
  sink& s = the_sink();
  std::lock_guard lk(s.mu);
  if (s.path != path) {
    // A new trace: check that the file can be written now, not when the first runtime ends.
    std::FILE* f = std::fopen(path, "w");
    if (!f)
      throw std::invalid_argument(fmt::format("WEFT_TRACE: cannot write {}: {}", path, std::strerror(errno)));
    std::fclose(f);
    s.path = path;
    s.origin_ns = trace_now_ns();
    s.runtimes.clear();  // (a runtime of the old trace may still end: its id is not reused)
    s.next_pid = 1;
    write_file(s);  // an empty trace until the first runtime ends
  }
  if (!ordered && !s.warned_serial) {
    s.warned_serial = true;
    diagnostics().warn("WEFT_TRACE: a runtime in serial mode runs no segments, so its trace is empty; "
                       "trace with WEFT_WORKERS=2 (or WEFT_MODE=ordered)");
  }
  const std::uint32_t id = s.next_id++;
  s.runtimes.push_back({id, s.next_pid++, ordered ? workers : 1, ordered, false, {}});
  return id;
}

void trace_runtime_ended(std::uint32_t id, trace_log&& log) noexcept {
  if (!id) return;
  alloc_log_pause pause;
  sink& s = the_sink();
  std::lock_guard lk(s.mu);
  try {
    for (traced_runtime& r : s.runtimes) {
      if (r.id != id || r.ended) continue;  // (gone: WEFT_TRACE named another file since it started)
      r.log = std::move(log);
      r.ended = true;
      write_file(s);
      return;
    }
  } catch (const std::exception& e) {
    diagnostics().warn("WEFT_TRACE: writing {} failed: {}", s.path, e.what());
  } catch (...) {
  }
}

}  // namespace weft::detail
