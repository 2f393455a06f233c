// bench/stm/variant_libitm.cpp — the GCC transactional memory variant of weft_stm_bench: the same
// structures as every other variant, on plain fields, each operation in `__transaction_atomic { }`.
// Compiled with -fgnu-tm (this file only) and linked with libitm, the word-based STM shipped with GCC
// (its default method on x86 without RTM: ml_wt, multiple locks, write-through). GCC instruments every
// load and store of the transaction and maps new/delete to libitm's transactional versions.
//
// The cell type is private to this file, so that the templates instantiated here (with their
// transactional clones) are distinct from the un-instrumented ones of the other variants.
// libitm has no public abort counter: aborts_per_commit is reported as null.
#include "generic.hpp"

namespace stm_bench {

namespace {

template <class T>
class itm_cell {
 public:
  explicit itm_cell(T v = T{}) : value_(v) {}
  itm_cell(const itm_cell&) = delete;
  itm_cell& operator=(const itm_cell&) = delete;
  T get() const { return value_; }
  void set(T v) { value_ = v; }

 private:
  T value_;
};

struct itm_sync : no_probe {
  template <class F>
  void read(F&& f) {
    __transaction_atomic { f(); }
  }
  template <class F>
  void write(F&& f) {
    __transaction_atomic { f(); }
  }
};

}  // namespace

outcome run_libitm(const config& cfg) {
  itm_sync sync;
  return run_generic<itm_cell>(cfg, sync);
}

}  // namespace stm_bench
