// bench/stm/generic.hpp — the workloads driven through one "run this atomically" policy; used by the
// variants whose synchronisation does not depend on what the operation touches: unsync (call it),
// mutex (one global lock), libitm (__transaction_atomic) and weft (weft::atomically).
//
//   Sync has  template <class F> void read(F&& f)    — f only reads shared cells
//             template <class F> void write(F&& f)   — f may write them
//             void open(), void close()              — the measured window opens / closes (no_probe)
//
// Each f is one transaction. f may run several times (STM aborts); it only writes shared cells and
// captured locals of this call, and its operation was drawn before it started, so a rerun repeats it.
#pragma once

#include "harness.hpp"
#include "structures.hpp"

namespace stm_bench {

template <template <class> class Cell, class Sync>
outcome run_bank(const config& cfg, Sync& sync) {
  bank<Cell> b(static_cast<std::size_t>(cfg.param));
  const auto accounts = static_cast<std::uint64_t>(cfg.param);
  auto one_transaction = [&](thread_state& st) {
    const bank_op op = draw_bank_op(st.random, accounts);
    if (op.read_only) {
      long s = 0;
      sync.read([&] { s = b.sum(op); });
      st.sink += static_cast<std::uint64_t>(s);
    } else {
      sync.write([&] { b.transfer(op); });
    }
  };
  timed_run run = run_timed(cfg, one_transaction, sync);
  return make_outcome(run, check_bank(b));
}

/// intset (sorted_list or skip_list).
template <class Set, class Sync>
outcome run_intset(const config& cfg, Sync& sync) {
  const key_space space = key_space_of(cfg);
  Set set(space);
  fill_keys(cfg, space, [&](long key, int height, long) { return set.insert(key, height); });
  auto one_transaction = [&](thread_state& st) {
    const key_op op = draw_key_op(st.random, space.range, space.levels);
    bool done = false;
    switch (op.kind) {
      case key_op::lookup:
        sync.read([&] { done = set.contains(op.key); });
        st.sink += done;
        break;
      case key_op::insert:
        sync.write([&] { done = set.insert(op.key, op.height); });
        st.inserted += done;
        break;
      case key_op::remove:
        sync.write([&] { done = set.remove(op.key); });
        st.removed += done;
        break;
    }
  };
  timed_run run = run_timed(cfg, one_transaction, sync);
  return make_outcome(run, set.check(space.keys + run.net_inserted()));
}

template <template <class> class Cell, class Sync>
outcome run_hashmap(const config& cfg, Sync& sync) {
  const key_space space = key_space_of(cfg);
  hash_map<Cell> map(space);
  fill_keys(cfg, space, [&](long key, int, long value) { return map.insert(key, value); });
  auto one_transaction = [&](thread_state& st) {
    const key_op op = draw_key_op(st.random, space.range, space.levels);
    bool done = false;
    switch (op.kind) {
      case key_op::lookup: {
        long v = 0;
        sync.read([&] { done = map.lookup(op.key, v); });
        st.sink += static_cast<std::uint64_t>(v);
        break;
      }
      case key_op::insert:
        sync.write([&] { done = map.insert(op.key, op.value); });
        st.inserted += done;
        break;
      case key_op::remove:
        sync.write([&] { done = map.remove(op.key); });
        st.removed += done;
        break;
    }
  };
  timed_run run = run_timed(cfg, one_transaction, sync);
  return make_outcome(run, map.check(space.keys + run.net_inserted(), space.range));
}

template <template <class> class Cell, class Sync>
outcome run_generic(const config& cfg, Sync& sync) {
  switch (cfg.workload) {
    case workload_kind::bank: return run_bank<Cell>(cfg, sync);
    case workload_kind::intset_list: return run_intset<sorted_list<Cell>>(cfg, sync);
    case workload_kind::intset_skiplist: return run_intset<skip_list<Cell>>(cfg, sync);
    case workload_kind::hashmap: return run_hashmap<Cell>(cfg, sync);
  }
  return {};
}

}  // namespace stm_bench
