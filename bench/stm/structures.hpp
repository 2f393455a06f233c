// bench/stm/structures.hpp — the shared data structures of weft_stm_bench, written once over a
// "cell" type so that unsync, mutex, libitm and weft run exactly the same algorithm:
//
//   Cell<T> has  explicit Cell(T init), T get() const, void set(T)   — plain_cell<T> below, or weft::tvar<T>
//
//   bank          N accounts of Cell<long>, unpadded (an array of balances, as in TinySTM's bank).
//   sorted_list   intset as a sorted singly linked list with head/tail sentinels; `next` is a Cell.
//   skip_list     intset as a skip list (p = 1/2, height cap = bit width of the key count); the 64K-key
//                 set. Chosen over a red-black tree: the same short code serves every variant, and an
//                 update writes only the links of one node's neighbours (no rebalancing writes near
//                 the root that would make every update conflict).
//   hash_map      fixed bucket array of Cell<node*>, chaining, unsorted chains; value is a Cell.
//
// Nodes are allocated with `new` / ::operator new inside the operation; inside a weft transaction
// that allocation is logged (freed if the attempt aborts) and a `delete` is deferred to the epoch GC;
// under libitm GCC maps them to libitm's transactional new/delete. Keys are immutable after a node is
// made, so they are plain fields. Everything else a concurrent operation may read is a Cell.
//
// Access: the operations assume whatever synchronisation the caller provides (none, a lock, a
// transaction); the constructors, check() and destructors run single-threaded.
#pragma once

#include <climits>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include "harness.hpp"

namespace stm_bench {

/// The unsynchronised cell: a plain field.
template <class T>
class plain_cell {
 public:
  explicit plain_cell(T v = T{}) : value_(v) {}
  plain_cell(const plain_cell&) = delete;
  plain_cell& operator=(const plain_cell&) = delete;
  T get() const { return value_; }
  void set(T v) { value_ = v; }

 private:
  T value_;
};

/// A fixed array of cells, each constructed with the same value (cells are neither copyable nor movable).
template <class C, class T>
class cell_array {
 public:
  cell_array(std::size_t n, T init) : n_(n) {
    items_ = static_cast<C*>(::operator new(n * sizeof(C), std::align_val_t{64}));
    for (std::size_t i = 0; i < n; ++i) new (&items_[i]) C(init);
  }
  ~cell_array() {
    for (std::size_t i = 0; i < n_; ++i) items_[i].~C();
    ::operator delete(static_cast<void*>(items_), std::align_val_t{64});
  }
  cell_array(const cell_array&) = delete;
  cell_array& operator=(const cell_array&) = delete;
  C& operator[](std::size_t i) { return items_[i]; }
  const C& operator[](std::size_t i) const { return items_[i]; }
  std::size_t size() const { return n_; }

 private:
  C* items_;
  std::size_t n_;
};

// --- bank ----------------------------------------------------------------------------------------

template <template <class> class Cell>
class bank {
 public:
  static constexpr long initial_balance = 1000;
  explicit bank(std::size_t accounts) : accounts_(accounts, initial_balance) {}

  void transfer(const bank_op& op) {
    Cell<long>& from = accounts_[op.from];
    Cell<long>& to = accounts_[op.to];
    const long a = from.get();
    const long b = to.get();
    from.set(a - op.amount);
    to.set(b + op.amount);
  }
  long sum(const bank_op& op) const {
    long s = 0;
    for (std::uint32_t i : op.picks) s += accounts_[i].get();
    return s;
  }
  long balance(std::size_t i) const { return accounts_[i].get(); }
  std::size_t size() const { return accounts_.size(); }

 private:
  cell_array<Cell<long>, long> accounts_;
};

/// Money is conserved: the total is what it was at the start.
template <class Bank>
std::string check_bank(const Bank& b) {
  long total = 0;
  for (std::size_t i = 0; i < b.size(); ++i) total += b.balance(i);
  const long expected = static_cast<long>(b.size()) * 1000;
  if (total == expected) return "ok";
  return "total " + std::to_string(total) + " != " + std::to_string(expected);
}

// --- sorted linked list -------------------------------------------------------------------------

template <template <class> class Cell>
class sorted_list {
  struct node {
    node(long k, node* n) : key(k), next(n) {}
    const long key;
    Cell<node*> next;
  };

 public:
  explicit sorted_list(const key_space&) {
    node* tail = new node(LONG_MAX, nullptr);
    head_ = new node(LONG_MIN, tail);
  }
  ~sorted_list() {
    for (node* n = head_; n;) {
      node* next = n->next.get();
      delete n;
      n = next;
    }
  }
  sorted_list(const sorted_list&) = delete;
  sorted_list& operator=(const sorted_list&) = delete;

  bool contains(long k) const {
    const node* n = head_->next.get();
    while (n->key < k) n = n->next.get();
    return n->key == k;
  }
  bool insert(long k, int /*height*/) {
    node* pred = head_;
    node* n = pred->next.get();
    while (n->key < k) {
      pred = n;
      n = n->next.get();
    }
    if (n->key == k) return false;
    pred->next.set(new node(k, n));
    return true;
  }
  bool remove(long k) {
    node* pred = head_;
    node* n = pred->next.get();
    while (n->key < k) {
      pred = n;
      n = n->next.get();
    }
    if (n->key != k) return false;
    pred->next.set(n->next.get());
    delete n;
    return true;
  }

  /// Strictly increasing keys between the sentinels, and `expected` of them.
  std::string check(std::int64_t expected) const {
    std::int64_t count = 0;
    long last = LONG_MIN;
    for (const node* n = head_->next.get(); n->key != LONG_MAX; n = n->next.get(), ++count) {
      if (n->key <= last) return "list out of order at key " + std::to_string(n->key);
      last = n->key;
    }
    if (count != expected) return "size " + std::to_string(count) + " != expected " + std::to_string(expected);
    return "ok";
  }

 private:
  node* head_;
};

// --- skip list -----------------------------------------------------------------------------------

template <template <class> class Cell>
class skip_list {
  struct node;
  using link = Cell<node*>;
  struct node {
    long key;
    int height;
    // `height` links follow the header in the same allocation.
    link* next() { return reinterpret_cast<link*>(this + 1); }
    const link* next() const { return reinterpret_cast<const link*>(this + 1); }
  };
  static_assert(sizeof(node) % alignof(link) == 0, "links follow the header aligned");
  static constexpr int max_levels = 32;

  static node* make(long key, int height, node* const* succs) {
    void* mem = ::operator new(sizeof(node) + static_cast<std::size_t>(height) * sizeof(link));
    node* n = new (mem) node{key, height};
    for (int l = 0; l < height; ++l) new (&n->next()[l]) link(succs ? succs[l] : nullptr);
    return n;
  }
  static void destroy(node* n) {
    for (int l = 0; l < n->height; ++l) n->next()[l].~link();
    n->~node();
    ::operator delete(static_cast<void*>(n));
  }

 public:
  explicit skip_list(const key_space& space) : levels_(space.levels < max_levels ? space.levels : max_levels) {
    node* tails[max_levels] = {};
    node* tail = make(LONG_MAX, levels_, nullptr);
    for (int l = 0; l < levels_; ++l) tails[l] = tail;
    head_ = make(LONG_MIN, levels_, tails);
  }
  ~skip_list() {
    for (node* n = head_; n;) {
      node* next = n->next()[0].get();
      destroy(n);
      n = next;
    }
  }
  skip_list(const skip_list&) = delete;
  skip_list& operator=(const skip_list&) = delete;

  bool contains(long k) const {
    const node* x = head_;
    for (int l = levels_ - 1; l >= 0; --l) {
      const node* y = x->next()[l].get();
      while (y->key < k) {
        x = y;
        y = x->next()[l].get();
      }
      if (y->key == k) return true;
    }
    return false;
  }
  bool insert(long k, int height) {
    node* preds[max_levels];
    node* succs[max_levels];
    if (find(k, preds, succs)) return false;
    if (height > levels_) height = levels_;
    node* n = make(k, height, succs);
    for (int l = 0; l < height; ++l) preds[l]->next()[l].set(n);
    return true;
  }
  bool remove(long k) {
    node* preds[max_levels];
    node* succs[max_levels];
    if (!find(k, preds, succs)) return false;
    node* victim = succs[0];
    for (int l = 0; l < victim->height; ++l) preds[l]->next()[l].set(victim->next()[l].get());
    destroy(victim);
    return true;
  }

  /// Every level strictly increasing and made of nodes tall enough; `expected` keys at level 0.
  std::string check(std::int64_t expected) const {
    for (int l = 0; l < levels_; ++l) {
      std::int64_t count = 0;
      long last = LONG_MIN;
      for (const node* n = head_->next()[l].get(); n->key != LONG_MAX; n = n->next()[l].get(), ++count) {
        if (n->key <= last) return "level " + std::to_string(l) + " out of order at key " + std::to_string(n->key);
        if (n->height <= l) return "node " + std::to_string(n->key) + " linked above its height";
        last = n->key;
      }
      if (l == 0 && count != expected)
        return "size " + std::to_string(count) + " != expected " + std::to_string(expected);
    }
    return "ok";
  }

 private:
  /// preds[l]: last node with key < k on level l; succs[l]: the node after it. True if k is present.
  bool find(long k, node** preds, node** succs) {
    node* x = head_;
    for (int l = levels_ - 1; l >= 0; --l) {
      node* y = x->next()[l].get();
      while (y->key < k) {
        x = y;
        y = x->next()[l].get();
      }
      preds[l] = x;
      succs[l] = y;
    }
    return succs[0]->key == k;
  }

  const int levels_;
  node* head_;
};

// --- hash map ------------------------------------------------------------------------------------

template <template <class> class Cell>
class hash_map {
  struct node {
    node(long k, long v, node* n) : key(k), value(v), next(n) {}
    const long key;
    Cell<long> value;
    Cell<node*> next;
  };

 public:
  /// Twice as many buckets as keys (64K buckets for 32K keys).
  explicit hash_map(const key_space& space) : buckets_(bucket_count(space.keys), nullptr) {
    shift_ = 64 - std::countr_zero(buckets_.size());
  }
  ~hash_map() {
    for (std::size_t b = 0; b < buckets_.size(); ++b)
      for (node* n = buckets_[b].get(); n;) {
        node* next = n->next.get();
        delete n;
        n = next;
      }
  }
  hash_map(const hash_map&) = delete;
  hash_map& operator=(const hash_map&) = delete;

  /// Fibonacci hashing: the top bits of key * 2^64/phi.
  std::size_t bucket_of(long k) const {
    return static_cast<std::size_t>((static_cast<std::uint64_t>(k) * 0x9e3779b97f4a7c15ULL) >> shift_);
  }

  bool lookup(long k, long& v) const {
    for (const node* n = buckets_[bucket_of(k)].get(); n; n = n->next.get())
      if (n->key == k) {
        v = n->value.get();
        return true;
      }
    return false;
  }
  /// Adds k -> v; if k is there already, only its value changes. True if k was added.
  bool insert(long k, long v) {
    Cell<node*>& head = buckets_[bucket_of(k)];
    node* first = head.get();
    for (node* n = first; n; n = n->next.get())
      if (n->key == k) {
        n->value.set(v);
        return false;
      }
    head.set(new node(k, v, first));
    return true;
  }
  bool remove(long k) {
    Cell<node*>* link = &buckets_[bucket_of(k)];
    for (node* n = link->get(); n; n = n->next.get()) {
      if (n->key == k) {
        link->set(n->next.get());
        delete n;
        return true;
      }
      link = &n->next;
    }
    return false;
  }

  /// Each key once, in its own bucket, and `expected` keys in all.
  std::string check(std::int64_t expected, long range) const {
    std::vector<bool> seen(static_cast<std::size_t>(range), false);
    std::int64_t count = 0;
    for (std::size_t b = 0; b < buckets_.size(); ++b)
      for (const node* n = buckets_[b].get(); n; n = n->next.get(), ++count) {
        if (n->key < 0 || n->key >= range) return "key " + std::to_string(n->key) + " out of range";
        if (bucket_of(n->key) != b) return "key " + std::to_string(n->key) + " in the wrong bucket";
        if (seen[static_cast<std::size_t>(n->key)]) return "key " + std::to_string(n->key) + " twice";
        seen[static_cast<std::size_t>(n->key)] = true;
      }
    if (count != expected) return "size " + std::to_string(count) + " != expected " + std::to_string(expected);
    return "ok";
  }

 private:
  static std::size_t bucket_count(long keys) {
    std::size_t n = 2;
    while (n < 2 * static_cast<std::size_t>(keys)) n *= 2;
    return n;
  }
  cell_array<Cell<node*>, node*> buckets_;
  int shift_ = 0;
};

// --- initial contents ----------------------------------------------------------------------------

/// Inserts space.keys distinct keys drawn from [0, space.range) with the run's seed (single-threaded,
/// before the window opens); every variant gets the same keys, inserted in the same order.
template <class Insert>
void fill_keys(const config& cfg, const key_space& space, Insert insert) {
  rng r = seeded_rng(cfg.seed, 0);
  for (long added = 0; added < space.keys;) {
    const long key = static_cast<long>(r.below(static_cast<std::uint64_t>(space.range)));
    const int height = draw_height(r, space.levels);
    if (insert(key, height, static_cast<long>(r.next() >> 1))) ++added;
  }
}

}  // namespace stm_bench
