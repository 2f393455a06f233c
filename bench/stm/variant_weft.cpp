// bench/stm/variant_weft.cpp — the weft variant of weft_stm_bench: every shared cell is a
// weft::tvar<T>, every operation one weft::atomically. Nodes are allocated with plain `new` inside the
// transaction (weft frees them if the attempt aborts) and deleted with plain `delete` (weft defers the
// free to its epoch GC at commit).
//
// weft-nosolo: the same with solo mode off (weft::stm_options::solo), so that one thread runs the
// path every thread takes when several use the STM: the baseline of the 2-thread scaling figures.
//
// Besides throughput it reports weft's own counters (weft::stats()) over the measured window: aborts
// per commit and inevitable (serialised) transactions. Each operation of the run is exactly one
// committed transaction, so over the whole run (warm-up included) weft's commit count must equal the
// harness's; a difference fails the run's check.
#include <weft/stm.hpp>

#include "generic.hpp"

namespace stm_bench {

namespace {

struct weft_sync {
  template <class F>
  void read(F&& f) {
    weft::atomically(f);
  }
  template <class F>
  void write(F&& f) {
    weft::atomically(f);
  }
  void open() { at_open = weft::stats().total; }
  void close() { at_close = weft::stats().total; }
  weft::stm_counters at_open, at_close;
};

template <class T>
using tvar = weft::tvar<T>;

}  // namespace

outcome run_weft(const config& cfg) {
  weft_sync sync;
  const weft::stm_counters before = weft::stats().total;
  outcome out = run_generic<tvar>(cfg, sync);
  const weft::stm_counters after = weft::stats().total;

  const std::uint64_t commits = sync.at_close.commits - sync.at_open.commits;
  const std::uint64_t aborts = sync.at_close.aborts() - sync.at_open.aborts();
  out.aborts_per_commit = commits ? static_cast<double>(aborts) / static_cast<double>(commits) : 0.0;
  out.inevitable = sync.at_close.inevitable - sync.at_open.inevitable;
  if (out.check == "ok" && after.commits - before.commits != out.all_transactions)
    out.check = "weft::stats() counted " + std::to_string(after.commits - before.commits) + " commits for " +
                std::to_string(out.all_transactions) + " transactions";
  return out;
}

outcome run_weft_nosolo(const config& cfg) {
  weft::configure_stm({.solo = false});  // every transaction takes the multi-thread path, even alone
  return run_weft(cfg);
}

}  // namespace stm_bench
