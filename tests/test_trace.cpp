// WEFT_TRACE=FILE (DESIGN.md §7, scheduler/src/trace.hpp): the trace of ordered mode's segments, a
// Chrome trace-event JSON file. Run in the mode matrix: in serial mode the file holds the runtime
// and no segment; in ordered mode one slice per segment attempt, named by its outcome, whose counts
// are run_stats()'s.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "support.hpp"

using namespace weft;
using namespace weft::test;

namespace {

// A JSON value's syntax (RFC 8259), enough to tell that a viewer will load the file: objects,
// arrays, strings with escapes, numbers, true/false/null. Returns whether `text` is one value.
class json_checker {
 public:
  explicit json_checker(const std::string& text) : s_(text) {}
  bool valid() {
    skip();
    if (!value()) return false;
    skip();
    return i_ == s_.size();
  }

 private:
  const std::string& s_;
  std::size_t i_ = 0;
  void skip() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool eat(char c) {
    skip();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool literal(const char* word) {
    const std::string w(word);
    if (s_.compare(i_, w.size(), w) != 0) return false;
    i_ += w.size();
    return true;
  }
  bool string() {
    if (!eat('"')) return false;
    while (i_ < s_.size()) {
      const char c = s_[i_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c == '\\') {
        if (i_ >= s_.size()) return false;
        const char e = s_[i_++];
        if (e == 'u') {
          for (int k = 0; k < 4; ++k)
            if (i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_++]))) return false;
        } else if (std::string("\"\\/bfnrt").find(e) == std::string::npos) {
          return false;
        }
      }
    }
    return false;
  }
  bool number() {
    const std::size_t start = i_;
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '.' || s_[i_] == 'e' ||
                              s_[i_] == 'E' || s_[i_] == '+' || s_[i_] == '-'))
      ++i_;
    return i_ > start;
  }
  bool value() {
    skip();
    if (i_ >= s_.size()) return false;
    const char c = s_[i_];
    if (c == '{') {
      ++i_;
      if (eat('}')) return true;
      do {
        skip();
        if (!string() || !eat(':') || !value()) return false;
      } while (eat(','));
      return eat('}');
    }
    if (c == '[') {
      ++i_;
      if (eat(']')) return true;
      do {
        if (!value()) return false;
      } while (eat(','));
      return eat(']');
    }
    if (c == '"') return string();
    if (c == 't') return literal("true");
    if (c == 'f') return literal("false");
    if (c == 'n') return literal("null");
    return number();
  }
};

// WEFT_TRACE set to a fresh file of this process for the scope; the file is removed at the end.
struct trace_file {
  std::string path;
  trace_file() {
    static int n = 0;
    path = (std::filesystem::temp_directory_path() /
            ("weft-trace-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + ".json"))
               .string();
    setenv("WEFT_TRACE", path.c_str(), 1);
  }
  ~trace_file() {
    unsetenv("WEFT_TRACE");
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
  std::string text() const {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
};

struct slice {
  std::string name;
  int pid;
  unsigned tid;
  double ts, dur;
  std::uint64_t tasklet;
};

// The trace's slices (one event a line, as the writer puts them).
std::vector<slice> slices_of(const std::string& text) {
  static const std::regex x(
      R"re(\{"ph":"X","cat":"segment","name":"([^"]+)","cname":"[a-z_]+","pid":(\d+),"tid":(\d+),"ts":([0-9.]+),"dur":([0-9.]+),"args":\{"tasklet":(\d+)\}\})re");
  std::vector<slice> out;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (line.find("\"ph\":\"X\"") == std::string::npos) continue;
    REQUIRE(std::regex_search(line, m, x));
    out.push_back({m[1], std::stoi(m[2]), static_cast<unsigned>(std::stoul(m[3])), std::stod(m[4]), std::stod(m[5]),
                   std::stoull(m[6])});
  }
  return out;
}

}  // namespace

TEST_CASE_METHOD(fresh_runtime, "WEFT_TRACE writes one slice per segment attempt, named by its outcome as run_stats counts them",
                 "[unit][ordered][trace]") {
  trace_file file;
  tvar<int> total{0};
  for (int k = 0; k < 6; ++k)
    spawn([&] {
      for (int i = 0; i < 20; ++i) {
        spin_us(30);
        atomically([&] { total.set(total.get() + 1); });  // every tasklet writes it: some conflicts
        schedule();
      }
    });
  run();
  CHECK(atomically([&] { return total.get(); }) == 6 * 20);
  const run_statistics st = run_stats();
  const unsigned workers = configuration().workers;
  weft::shutdown();  // the runtime ends: the file is written
  const std::string text = file.text();
  CHECK(json_checker(text).valid());
  CHECK(text.find(R"("name":"process_name","pid":1,)") != std::string::npos);
  const std::vector<slice> all = slices_of(text);
  if (configuration().mode != mode::ordered) {
    CHECK(text.find("serial (no segments)") != std::string::npos);
    CHECK(all.empty());
    return;
  }
  std::map<std::string, std::uint64_t> count;
  for (const slice& s : all) {
    ++count[s.name];
    CHECK(s.pid == 1);
    CHECK(s.tid < workers);
    CHECK(s.ts >= 0);
    CHECK(s.dur >= 0);
    CHECK(s.tasklet > 0);  // tasklets' ids; main runs no segment
  }
  CHECK(count["commit"] + count["commit (inevitable)"] == st.commits);
  CHECK(count["abort: conflict"] == st.aborts_conflict);
  CHECK(count["abort: injected"] == st.aborts_injected);
  CHECK(count["abort: tasklet changed"] == st.aborts_changed);
  if (!st.fell_back_to_serial) {
    CHECK(st.commits == 6 * 21);  // 20 schedules and the exit of each
    // Slices of a lane do not overlap: a thread runs one segment at a time.
    std::map<unsigned, std::vector<std::pair<double, double>>> lanes;
    for (const slice& s : all) lanes[s.tid].push_back({s.ts, s.ts + s.dur});
    for (auto& [lane, spans] : lanes) {
      std::sort(spans.begin(), spans.end());
      for (std::size_t i = 1; i < spans.size(); ++i) CHECK(spans[i].first >= spans[i - 1].second - 0.002);
    }
  } else {
    CHECK(text.find(R"("name":"fallback to serial")") != std::string::npos);
  }
}

TEST_CASE_METHOD(fresh_runtime, "WEFT_TRACE puts each thread's runtime in the file as its own process", "[unit][ordered][trace]") {
  trace_file file;
  std::thread other([] {
    spawn([] { schedule(); });
    run();
  });  // its runtime ends with the thread: written
  other.join();
  spawn([] { schedule(); });
  run();
  weft::shutdown();
  const std::string text = file.text();
  CHECK(json_checker(text).valid());
  CHECK(text.find(R"("name":"process_name","pid":1,)") != std::string::npos);
  CHECK(text.find(R"("name":"process_name","pid":2,)") != std::string::npos);
  if (configuration().mode == mode::ordered) {
    std::set<int> pids;
    for (const slice& s : slices_of(text)) pids.insert(s.pid);
    CHECK(pids == std::set<int>{1, 2});
  }
}

TEST_CASE_METHOD(fresh_runtime, "WEFT_TRACE naming a file that cannot be written is an error that names the variable",
                 "[unit][ordered][trace]") {
  setenv("WEFT_TRACE", "/nonexistent-weft-dir/trace.json", 1);
  require_throws_message<std::invalid_argument>([] { spawn([] {}); },
                                                "WEFT_TRACE: cannot write /nonexistent-weft-dir/trace.json: No such file or directory");
  unsetenv("WEFT_TRACE");
  // Nothing was left half made: the next runtime starts and runs.
  tvar<int> ran{0};
  spawn([&] { ran.set(1); });
  run();
  CHECK(ran.get() == 1);
}
