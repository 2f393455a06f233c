// bench/stm/variant_striped.cpp — the fine-grained locking variant of weft_stm_bench: the best a
// programmer does by hand with locks, per workload:
//
//   bank              1024 std::mutex stripes, each in its own cache line; account i is guarded by
//                     stripe i % 1024. A transfer locks its (one or two) stripes in index order (= address
//                     order: no deadlock); a read-only sum locks its up-to-8 distinct stripes in order.
//   intset-list       hand-over-hand (lock coupling): a std::mutex in every node; a traversal holds at
//                     most two, taking the next before letting go of the previous. A removed node is
//                     freed at once: nobody can be waiting for it, since reaching it takes its
//                     predecessor's lock, which the remover holds.
//   intset-skiplist   no striping: one readers-writer lock (std::shared_mutex) over the skip list,
//                     lookups shared, updates exclusive. (Per-node locking of a skip list — the lazy
//                     skip list — also needs deferred reclamation; out of scope for a baseline.)
//   hashmap           1024 std::mutex stripes, bucket b guarded by stripe b % 1024; an operation touches
//                     one bucket, so it takes one lock.
//
// Data are the plain-field structures of structures.hpp (except the list, which needs its node locks).
#include <climits>
#include <mutex>
#include <shared_mutex>

#include "generic.hpp"

namespace stm_bench {

namespace {

constexpr std::size_t stripe_count = 1024;

struct alignas(64) padded_mutex {
  std::mutex lock;
};

/// The stripes; each guards the cells whose index maps to it and is held for one operation only.
class stripes {
 public:
  stripes() : locks_(stripe_count) {}
  static std::size_t of(std::size_t index) { return index % stripe_count; }
  std::mutex& operator[](std::size_t stripe) { return locks_[stripe].lock; }

 private:
  std::vector<padded_mutex> locks_;
};

// --- bank ----------------------------------------------------------------------------------------

outcome run_striped_bank(const config& cfg) {
  bank<plain_cell> b(static_cast<std::size_t>(cfg.param));
  stripes locks;
  const auto accounts = static_cast<std::uint64_t>(cfg.param);
  timed_run run = run_timed(cfg, [&](thread_state& st) {
    const bank_op op = draw_bank_op(st.random, accounts);
    if (op.read_only) {
      // Distinct stripes, ascending (insertion sort of at most 8).
      std::size_t held[bank_op::sum_width];
      int n = 0;
      for (std::uint32_t account : op.picks) {
        const std::size_t s = stripes::of(account);
        int i = n;
        while (i > 0 && held[i - 1] > s) --i;
        if (i > 0 && held[i - 1] == s) continue;
        for (int j = n; j > i; --j) held[j] = held[j - 1];
        held[i] = s;
        ++n;
      }
      for (int i = 0; i < n; ++i) locks[held[i]].lock();
      const long s = b.sum(op);
      for (int i = n; i-- > 0;) locks[held[i]].unlock();
      st.sink += static_cast<std::uint64_t>(s);
    } else {
      std::size_t first = stripes::of(op.from), second = stripes::of(op.to);
      if (first > second) std::swap(first, second);
      locks[first].lock();
      if (second != first) locks[second].lock();
      b.transfer(op);
      if (second != first) locks[second].unlock();
      locks[first].unlock();
    }
  });
  return make_outcome(run, check_bank(b));
}

// --- hand-over-hand list -------------------------------------------------------------------------

class hand_over_hand_list {
  struct node {
    node(long k, node* n) : key(k), next(n) {}
    const long key;
    node* next;       // changed only while holding this node's lock
    std::mutex lock;  // guards `next`; taken only while holding the predecessor's lock (or as head)
  };

 public:
  hand_over_hand_list() {
    node* tail = new node(LONG_MAX, nullptr);
    head_ = new node(LONG_MIN, tail);
  }
  ~hand_over_hand_list() {
    for (node* n = head_; n;) {
      node* next = n->next;
      delete n;
      n = next;
    }
  }
  hand_over_hand_list(const hand_over_hand_list&) = delete;
  hand_over_hand_list& operator=(const hand_over_hand_list&) = delete;

  bool contains(long k) {
    auto [pred, cur] = locate(k);
    const bool found = cur->key == k;
    cur->lock.unlock();
    pred->lock.unlock();
    return found;
  }
  bool insert(long k, int) {
    auto [pred, cur] = locate(k);
    const bool added = cur->key != k;
    if (added) pred->next = new node(k, cur);
    cur->lock.unlock();
    pred->lock.unlock();
    return added;
  }
  bool remove(long k) {
    auto [pred, cur] = locate(k);
    const bool found = cur->key == k;
    if (found) pred->next = cur->next;
    cur->lock.unlock();
    pred->lock.unlock();
    if (found) delete cur;
    return found;
  }
  std::string check(std::int64_t expected) const {
    std::int64_t count = 0;
    long last = LONG_MIN;
    for (const node* n = head_->next; n->key != LONG_MAX; n = n->next, ++count) {
      if (n->key <= last) return "list out of order at key " + std::to_string(n->key);
      last = n->key;
    }
    if (count != expected) return "size " + std::to_string(count) + " != expected " + std::to_string(expected);
    return "ok";
  }

 private:
  /// Returns {pred, cur}, both locked: pred->key < k <= cur->key.
  std::pair<node*, node*> locate(long k) {
    node* pred = head_;
    pred->lock.lock();
    node* cur = pred->next;
    cur->lock.lock();
    while (cur->key < k) {
      pred->lock.unlock();
      pred = cur;
      cur = cur->next;
      cur->lock.lock();
    }
    return {pred, cur};
  }

  node* head_;
};

/// Readers-writer lock over the whole structure (the skip list).
struct rw_sync : no_probe {
  alignas(64) std::shared_mutex lock;  // protects every cell; held for one operation
  template <class F>
  void read(F&& f) {
    std::shared_lock guard(lock);
    f();
  }
  template <class F>
  void write(F&& f) {
    std::unique_lock guard(lock);
    f();
  }
};

// --- hash map ------------------------------------------------------------------------------------

outcome run_striped_hashmap(const config& cfg) {
  const key_space space = key_space_of(cfg);
  hash_map<plain_cell> map(space);
  stripes locks;
  fill_keys(cfg, space, [&](long key, int, long value) { return map.insert(key, value); });
  timed_run run = run_timed(cfg, [&](thread_state& st) {
    const key_op op = draw_key_op(st.random, space.range, space.levels);
    std::lock_guard guard(locks[stripes::of(map.bucket_of(op.key))]);
    switch (op.kind) {
      case key_op::lookup: {
        long v = 0;
        map.lookup(op.key, v);
        st.sink += static_cast<std::uint64_t>(v);
        break;
      }
      case key_op::insert: st.inserted += map.insert(op.key, op.value); break;
      case key_op::remove: st.removed += map.remove(op.key); break;
    }
  });
  return make_outcome(run, map.check(space.keys + run.net_inserted(), space.range));
}

/// run_intset's Sync for a structure that locks itself.
using self_locking = call_directly;

/// hand_over_hand_list with the constructor run_intset expects.
struct locked_list : hand_over_hand_list {
  explicit locked_list(const key_space&) {}
};

}  // namespace

outcome run_striped(const config& cfg) {
  switch (cfg.workload) {
    case workload_kind::bank: return run_striped_bank(cfg);
    case workload_kind::intset_list: {
      self_locking sync;
      return run_intset<locked_list>(cfg, sync);
    }
    case workload_kind::intset_skiplist: {
      rw_sync sync;
      return run_intset<skip_list<plain_cell>>(cfg, sync);
    }
    case workload_kind::hashmap: return run_striped_hashmap(cfg);
  }
  return {};
}

}  // namespace stm_bench
