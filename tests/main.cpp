// weft_tests' main: Catch2's, plus one rule of the house — a test case that checks nothing fails.
// (Catch2 v2 takes a single -w option; CTest passes `-w NoTests`, so the no-assertion check is this
// listener instead of `-w NoAssertions`.)
#define CATCH_CONFIG_RUNNER
#include <cstdio>

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
  const int failed = Catch::Session().run(argc, argv);
  if (failed != 0) return failed;
  return cases_without_assertions == 0 ? 0 : 3;
}
