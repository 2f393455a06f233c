// Function-local statics first used by tasklets (issue 10: __cxa_guard_acquire). In ordered mode a
// speculative segment that reaches a static's first initialisation waits for its turn first: run
// speculatively and rolled back, the static would stay marked initialised holding memory the
// rollback freed (ASan: heap-use-after-free; Release: garbage in the table).
#include <numeric>
#include <string>
#include <vector>

#include <weft/weft.hpp>

namespace {

template <int N>
const std::vector<std::string>& table() {
  static const std::vector<std::string> t = [] {  // allocates: memory of the segment that runs it
    std::vector<std::string> v;
    for (int i = 0; i < 50; ++i) v.push_back("entry " + std::to_string(N * 100 + i) + " of a long enough string");
    return v;
  }();
  return t;
}

template <int... N>
std::size_t total(std::integer_sequence<int, N...>) {
  return (std::size_t{0} + ... + table<N>().back().size());
}

template <int... N>
void spawn_all(weft::tvar<long>& sum, std::integer_sequence<int, N...>) {
  (weft::spawn([&sum] {
     weft::schedule();  // the first use comes in a later segment, speculative at two workers
     const long n = static_cast<long>(table<N>().size() + table<N>()[N % 50].size());
     weft::atomically([&] { sum.set(sum.get() + n); });
     weft::print("tasklet {}: {}\n", N, table<N>()[7]);
   }),
   ...);
}

}  // namespace

int main() {
  using seq = std::make_integer_sequence<int, 24>;
  weft::tvar<long> sum{0};
  spawn_all(sum, seq{});
  weft::run();
  weft::print("sum {}\n", sum.get());
  weft::print("total {}\n", total(seq{}));
  return 0;
}
