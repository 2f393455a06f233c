// weft_tests' main: Catch2's, plus one rule of the house — a test case that checks nothing fails.
// (Catch2 v2 takes a single -w option; CTest passes `-w NoTests`, so the no-assertion check is this
// listener instead of `-w NoAssertions`.)
//
// `--env NAME=VALUE` (any number, before Catch2's own arguments are parsed) sets an environment
// variable for the run: the mode matrix (tests/CMakeLists.txt) passes its WEFT_* settings this way.
// A CTest ENVIRONMENT property with several variables does not survive catch_discover_tests (its
// list is flattened into separate properties, and only the first variable was set: the "inject"
// variants ran without injection, "ordered 1" ran serial).
#define CATCH_CONFIG_RUNNER
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <catch2/catch.hpp>

namespace {
int cases_without_assertions = 0;

struct assertion_guard : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseEnded(const Catch::TestCaseStats& stats) override {
    if (stats.totals.assertions.total() != 0) return;
    ++cases_without_assertions;
    std::fprintf(stderr, "weft_tests: test case \"%s\" checked nothing (no assertion ran)\n",
                 stats.testInfo.name.c_str());
  }
};
}  // namespace

CATCH_REGISTER_LISTENER(assertion_guard)

int main(int argc, char* argv[]) {
  std::vector<char*> args{argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--env") != 0) {
      args.push_back(argv[i]);
      continue;
    }
    char* setting = i + 1 < argc ? argv[++i] : nullptr;
    char* eq = setting ? std::strchr(setting, '=') : nullptr;
    if (!eq || eq == setting) {
      std::fprintf(stderr, "weft_tests: --env needs NAME=VALUE\n");
      return 2;
    }
    *eq = '\0';
    setenv(setting, eq + 1, 1);
  }
  const int failed = Catch::Session().run(static_cast<int>(args.size()), args.data());
  if (failed != 0) return failed;
  return cases_without_assertions == 0 ? 0 : 3;
}
