// A program whose own static initialisers use the STM before weft's can have run (issue 9 §2): named
// tvars at namespace scope, and a global whose constructor runs transactions. This translation unit is
// linked before weft's static library, so its initialisers run first. Prints what it saw; the CTest
// test (tests/CMakeLists.txt) checks the lines and a clean exit.
#include <cstdio>
#include <string>

#include <weft/stm.hpp>

weft::tvar<long> balance{100, "balance"};
weft::tvar<std::string> owner{"ann", "owner"};

struct opened_by_a_transaction {
  long seen;
  opened_by_a_transaction()
      : seen(weft::atomically([] {
          balance.set(balance.get() + 1);
          owner.modify([](std::string& s) { s += "+bob"; });
          return balance.get();
        })) {}
};
opened_by_a_transaction early;

int main() {
  std::printf("early transaction saw %ld\n", early.seen);
  std::printf("%s = %ld, %s = %s\n", balance.name(), balance.get(), owner.name(), owner.get().c_str());
  weft::atomically([] { balance.set(balance.get() * 2); });
  std::printf("after main's transaction: %ld, commits %llu\n", balance.get(),
              static_cast<unsigned long long>(weft::stats().total.commits));
  return 0;
}
