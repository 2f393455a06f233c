// The conflict profiler (weft/profile.hpp): an observer that adds every conflict record to its site.
// The observer runs on the thread that lost the attempt, outside any weft lock and outside the
// transaction (its allocations are its own), so a mutex around the tables is all it needs; conflicts
// are the slow path already.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "weft/detail/diagnostics.hpp"
#include "observe_impl.hpp"
#include "weft/profile.hpp"

namespace weft {

namespace {

// The process's first thread (static initialisation runs there), named as such in the report.
const std::thread::id process_main_thread = std::this_thread::get_id();
std::atomic<detail::profile_note_fn> profile_note{nullptr};

struct site_key {
  conflict_kind kind;
  const void* object;
  const char* read_file;
  std::uint_least32_t read_line;
  const char* write_file;
  std::uint_least32_t write_line;
  bool operator==(const site_key&) const = default;
};

struct site_hash {
  std::size_t operator()(const site_key& k) const noexcept {
    std::size_t h = std::hash<const void*>{}(k.object);
    auto mix = [&h](std::size_t v) { h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); };
    mix(static_cast<std::size_t>(k.kind));
    mix(std::hash<const void*>{}(k.read_file));
    mix(k.read_line);
    mix(std::hash<const void*>{}(k.write_file));
    mix(k.write_line);
    return h;
  }
};

struct site_data {
  conflict_site site;
  std::vector<std::thread::id> threads;  // distinct, capped
};

struct profiler_state {
  std::mutex lock;  // protects everything below
  std::unordered_map<site_key, site_data, site_hash> sites;
  std::unordered_map<std::string, std::uint64_t> inevitable_reasons;
  std::uint64_t conflicts = 0, time_lost_ns = 0, retry_waits = 0, inevitable = 0;

  void clear() {
    sites.clear();
    inevitable_reasons.clear();
    conflicts = time_lost_ns = retry_waits = inevitable = 0;
  }
};

profiler_state& state() {
  static profiler_state* s = new profiler_state;  // never destroyed: the report runs at exit
  return *s;
}

std::string object_label(const conflict_record& r) {
  if (r.name) return r.name;
  return fmt::format("tvar@{}", r.object);
}

void on_event(const event& e, void*) {
  profiler_state& s = state();
  switch (e.kind) {
    case event_kind::tx_abort: {
      if (!e.conflict) return;
      const conflict_record& r = *e.conflict;
      site_key key{r.kind, r.object, r.read_at.file_name(), r.read_at.line(), r.write_at.file_name(), r.write_at.line()};
      std::lock_guard guard(s.lock);
      site_data& d = s.sites[key];
      if (d.site.aborts == 0) {
        d.site.kind = r.kind;
        d.site.object = object_label(r);  // copied: the tvar (and its name) may go away
        d.site.read_at = r.read_at;
        d.site.write_at = r.write_at;
      }
      ++d.site.aborts;
      d.site.time_lost_ns += r.time_lost_ns;
      if (d.threads.size() < 64 && std::find(d.threads.begin(), d.threads.end(), r.thread) == d.threads.end())
        d.threads.push_back(r.thread);
      ++s.conflicts;
      s.time_lost_ns += r.time_lost_ns;
      return;
    }
    case event_kind::tx_retry_wait: {
      std::lock_guard guard(s.lock);
      ++s.retry_waits;
      return;
    }
    case event_kind::inevitable: {
      std::lock_guard guard(s.lock);
      ++s.inevitable;
      ++s.inevitable_reasons[e.reason ? e.reason : "unspecified"];
      return;
    }
    case event_kind::tx_commit:
    case event_kind::gc:
      return;
  }
}

bool profiler_installed() {
  const detail::observer_record* r = detail::observer_slot.load(std::memory_order_acquire);
  return r && r->fn == &on_event;
}

const char* kind_name(conflict_kind k) {
  switch (k) {
    case conflict_kind::read_write: return "read-write";
    case conflict_kind::write_write: return "write-write";
    case conflict_kind::inevitable: return "inevitable";
  }
  return "?";
}

// "dir/file.cpp:42": the last two path components are enough to find it and keep the table narrow.
std::string where(const std::source_location& l) {
  if (l.line() == 0) return "?";
  std::string_view f = l.file_name();
  std::size_t cut = f.rfind('/');
  if (cut != std::string_view::npos && cut > 0) {
    std::size_t prev = f.rfind('/', cut - 1);
    if (prev != std::string_view::npos) f = f.substr(prev + 1);
  }
  return fmt::format("{}:{}", f, l.line());
}

std::string duration(std::uint64_t ns) {
  if (ns >= 1'000'000'000) return fmt::format("{:.2f} s", static_cast<double>(ns) / 1e9);
  if (ns >= 1'000'000) return fmt::format("{:.2f} ms", static_cast<double>(ns) / 1e6);
  if (ns >= 1'000) return fmt::format("{:.1f} us", static_cast<double>(ns) / 1e3);
  return fmt::format("{} ns", ns);
}

void report_at_exit() {
  if (!profiler_installed() && state().conflicts == 0 && state().inevitable == 0) return;
  detail::diagnostics().info("{}", format_profile(profile_snapshot()));
}

// WEFT_PROFILE=1: profile the whole run, report at exit.
struct env_start {
  env_start() {
    const char* e = std::getenv("WEFT_PROFILE");
    if (!e || !*e || std::string_view(e) == "0") return;
    detail::diagnostics();  // made before the exit handler is registered (it is never destroyed anyway)
    start_profiling();
    std::atexit(&report_at_exit);
  }
};
env_start env_start_instance;

}  // namespace

namespace detail {
// Referenced by the transaction descriptor so that this object file (and its WEFT_PROFILE start) is
// linked from the static library.
void link_profiler() noexcept {}
void set_profile_note(profile_note_fn note) noexcept { profile_note.store(note, std::memory_order_release); }
}  // namespace detail

void start_profiling() {
  {
    std::lock_guard guard(state().lock);
    state().clear();
  }
  set_observer(&on_event, nullptr);
}

profile profile_snapshot() {
  profile p;
  {
    profiler_state& s = state();
    std::lock_guard guard(s.lock);
    p.sites.reserve(s.sites.size());
    for (auto& [key, d] : s.sites) {
      p.sites.push_back(d.site);
      p.sites.back().threads = static_cast<std::uint32_t>(d.threads.size());
    }
    p.conflicts = s.conflicts;
    p.time_lost_ns = s.time_lost_ns;
    p.retry_waits = s.retry_waits;
    p.inevitable = s.inevitable;
    p.inevitable_reasons.assign(s.inevitable_reasons.begin(), s.inevitable_reasons.end());
  }
  std::sort(p.sites.begin(), p.sites.end(), [](const conflict_site& a, const conflict_site& b) {
    return a.time_lost_ns != b.time_lost_ns ? a.time_lost_ns > b.time_lost_ns : a.aborts > b.aborts;
  });
  std::sort(p.inevitable_reasons.begin(), p.inevitable_reasons.end(),
            [](const auto& a, const auto& b) { return a.second > b.second; });
  p.stats = stats();
  return p;
}

profile stop_profiling() {
  if (profiler_installed()) set_observer(nullptr);
  return profile_snapshot();
}

std::string format_profile(const profile& p, std::size_t max_sites) {
  const stm_counters& t = p.stats.total;
  std::string out = fmt::format(
      "weft conflict profile: {} commits ({} read-only), {} aborted attempts ({} by a conflict, {} lost), "
      "{} retry waits, {} inevitable\n",
      t.commits, t.read_only_commits, t.aborts(), p.conflicts, duration(p.time_lost_ns), p.retry_waits,
      p.inevitable);
  if (!p.sites.empty()) {
    out += fmt::format("  {:>10}  {:>7}  {:>7}  {:<11}  {:<24}  {:<32}  {}\n", "time lost", "aborts", "threads",
                       "kind", "object", "read at", "written at");
    for (std::size_t i = 0; i < p.sites.size() && i < max_sites; ++i) {
      const conflict_site& s = p.sites[i];
      out += fmt::format("  {:>10}  {:>7}  {:>7}  {:<11}  {:<24}  {:<32}  {}\n", duration(s.time_lost_ns), s.aborts,
                         s.threads, kind_name(s.kind), s.object, where(s.read_at), where(s.write_at));
    }
    if (p.sites.size() > max_sites) out += fmt::format("  ... {} more sites\n", p.sites.size() - max_sites);
  }
  if (!p.inevitable_reasons.empty()) {
    out += "  inevitable:";
    for (const auto& [reason, n] : p.inevitable_reasons) out += fmt::format(" \"{}\" x{}", reason, n);
    out += "\n";
  }
  unsigned numbered = 0;
  for (const stm_thread_stats& th : p.stats.per_thread) {
    if (th.counters.commits == 0 && th.counters.aborts() == 0) continue;
    // Threads by their order in the STM's registry (first use), the process's first thread by name
    // (a std::thread::id's hash, printed before, was a 19-digit number nobody could place).
    std::string who = th.segments                         ? std::string("ordered runs' segments")
                      : th.thread == std::thread::id()   ? std::string("exited threads")
                      : th.thread == process_main_thread ? std::string("main thread")
                                                         : fmt::format("thread {}", ++numbered);
    out += fmt::format("  {}: {} commits ({} solo), {} aborts ({} conflict found at a read, {} at commit, {} on a lock, "
                       "{} for the inevitable one, {} by an exception)\n",
                       who, th.counters.commits, th.counters.solo, th.counters.aborts(), th.counters.aborts_conflict,
                       th.counters.aborts_validation, th.counters.aborts_locked, th.counters.aborts_inevitable,
                       th.counters.aborts_exception);
  }
  if (detail::profile_note_fn note = profile_note.load(std::memory_order_acquire))
    if (std::string text = note(); !text.empty()) out += "  " + text + "\n";
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace weft
