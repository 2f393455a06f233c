// on_commit hooks of tasklets run where one worker runs them (red-team review, item 5). With one
// worker an atomically in a tasklet is a transaction of its own: its hooks run when it ends, and a
// hook registered outside any atomically runs at once. In ordered mode both belong to the segment's
// transaction and can run only when the segment commits; the commit runs them between the segment's
// buffered lines where one worker would have, so the output is the same, byte for byte.
#include <weft/weft.hpp>

int main() {
  weft::tvar<int> x{0};
  for (int i = 0; i < 4; ++i)
    weft::spawn([&x, i] {
      for (int round = 0; round < 2; ++round) {
        // Tasklet 1 goes on inevitable (it prints directly until a hook is pending, then buffers).
        if (i == 1) weft::become_inevitable("test");
        weft::print("{}.{} a\n", i, round);
        weft::atomically([&] {
          x.set(x.get() + 1);
          weft::on_commit([i, round] { weft::print("{}.{} hook in atomically\n", i, round); });
          weft::atomically([&] {  // nested deeper: still runs when the outermost one ends
            weft::on_commit([i, round] { weft::print("{}.{} hook in inner atomically\n", i, round); });
          });
        });
        weft::print("{}.{} b\n", i, round);
        weft::on_commit([i, round] { weft::print("{}.{} hook outside\n", i, round); });
        weft::print("{}.{} c\n", i, round);
        weft::schedule();
      }
    });
  weft::run();
  weft::print("x = {}\n", x.get());
  return 0;
}
