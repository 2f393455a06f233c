// Every public header, compiled as a user's strict build compiles it: with the headers on a plain
// -I path (not as system headers) and -Wall -Wextra -Wpedantic -Wshadow -Wconversion
// -Wsign-conversion -Wold-style-cast -Wzero-as-null-pointer-constant -Werror (tests/CMakeLists.txt).
// Newcomer round 16 found two headers that broke such a build. Compiled, not run: the templates a
// program instantiates are instantiated here.
#include <weft/channel.hpp>
#include <weft/errors.hpp>
#include <weft/gc.hpp>
#include <weft/log.hpp>
#include <weft/observe.hpp>
#include <weft/profile.hpp>
#include <weft/scheduler.hpp>
#include <weft/shared.hpp>
#include <weft/stm.hpp>
#include <weft/tasklet.hpp>
#include <weft/weft.hpp>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

namespace {

struct request {
  weft::channel<request> reply;  // a channel of the type being declared (the reply-channel idiom)
  int body = 0;
};

}  // namespace

int strict_headers_use() {
  weft::channel<int> numbers;
  weft::channel<request> requests;
  weft::tvar<std::string> text{"a"};
  weft::tvar<long> count{0, "count"};
  auto box = weft::shared<std::string>::make("shared");
  std::map<weft::channel<int>, int> by_channel{{numbers, 1}};
  std::set<weft::tasklet> tasklets;
  std::unordered_map<weft::channel<request>, int> hashed{{requests, 2}};
  weft::tasklet t = weft::spawn([numbers, requests, &text, &count]() mutable {
    request r{weft::channel<request>{}, 3};
    requests.send(r);
    weft::atomically([&] {
      text.set(text.get() + "b");
      count.set(count.get() + 1);
    });
    for (int v : numbers) weft::print("{}\n", v);
  });
  tasklets.insert(t);
  auto sink = std::make_shared<weft::commit_sink>();
  weft::start_profiling();
  const std::string report = weft::format_profile(weft::stop_profiling());
  return static_cast<int>(by_channel.size() + tasklets.size() + hashed.size() + report.size() + box->size()) +
         (weft::getruncount() > 0 ? 1 : 0) + (sink ? 1 : 0);
}
