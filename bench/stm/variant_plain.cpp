// bench/stm/variant_plain.cpp — the two baselines of weft_stm_bench that use no STM:
//   unsync  plain cells, no synchronisation at all (1 thread only): the floor every other variant is
//           measured against;
//   mutex   plain cells, every transaction holds one global std::mutex (readers too).
#include <mutex>

#include "generic.hpp"

namespace stm_bench {

namespace {

using no_sync = call_directly;

struct global_mutex : no_probe {
  alignas(64) std::mutex lock;  // protects every cell of the structure; held for one operation, nothing else
  template <class F>
  void read(F&& f) {
    std::lock_guard guard(lock);
    f();
  }
  template <class F>
  void write(F&& f) {
    std::lock_guard guard(lock);
    f();
  }
};

}  // namespace

outcome run_unsync(const config& cfg) {
  no_sync sync;
  return run_generic<plain_cell>(cfg, sync);
}

outcome run_mutex(const config& cfg) {
  global_mutex sync;
  return run_generic<plain_cell>(cfg, sync);
}

}  // namespace stm_bench
