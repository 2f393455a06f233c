// Output that must not be lost (issue 11 §4): weft::print reaches a file or pipe at once, and an
// exception that escapes a tasklet and then main ends the program through std::terminate with a
// message naming the tasklet, after every line printed before it.
//   weft_lost_output_child uncaught   a named tasklet throws; main does not catch
//   weft_lost_output_child unnamed    the same from a tasklet without a name
#include <cstring>
#include <stdexcept>

#include <weft/weft.hpp>

int main(int argc, char** argv) {
  const bool named = argc > 1 && std::strcmp(argv[1], "uncaught") == 0;
  weft::print("line one\n");
  weft::tasklet t = weft::spawn([] {
    weft::print("line two\n");
    weft::schedule();
    throw std::runtime_error("boom");
  });
  if (named) t.set_name("worker");
  weft::spawn([] { weft::print("line three\n"); });
  weft::run();  // rethrows "boom" here; nobody catches it
  weft::print("not reached\n");
  return 0;
}
