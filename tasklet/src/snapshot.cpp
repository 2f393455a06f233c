// Stack snapshot and restore of a suspended tasklet (DESIGN.md §5): the rollback half of a segment.
//
// The saved stack pointer (the fcontext value) is the lower bound of what must be kept: the callee-
// saved registers of the suspended tasklet sit just above it, and everything below it is dead. The
// copy is a plain word loop compiled without AddressSanitizer checks, because a suspended stack
// holds poisoned red zones that are not ours to read through the checked path.
#include <cstdint>
#include <cstring>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include "weft/detail/context.hpp"

namespace weft::detail {

namespace {

#if defined(__SANITIZE_ADDRESS__)
__attribute__((no_sanitize_address)) void copy_words(void* dst, const void* src, std::size_t n) noexcept {
  auto* d = static_cast<volatile unsigned char*>(dst);
  auto* s = static_cast<const volatile unsigned char*>(src);
  for (std::size_t i = 0; i < n; ++i) d[i] = s[i];
}
#else
void copy_words(void* dst, const void* src, std::size_t n) noexcept { std::memcpy(dst, src, n); }
#endif

// The restore writes only the words that differ. A tvar on the stack that other tasklets read (a
// parent's local its children use) holds in memory what the snapshot holds (its committed state:
// commits to it refresh the snapshot, ordered.cpp): rewriting it would race with their reads while
// changing nothing. (8-byte words: a saved stack pointer is 16-byte aligned, and so is the top.)
#if !defined(__SANITIZE_ADDRESS__)
void restore_words(void* dst, const void* src, std::size_t n) noexcept {
  auto* d = static_cast<std::uint64_t*>(dst);
  const auto* s = static_cast<const std::uint64_t*>(src);
  for (std::size_t i = 0; i < n / 8; ++i)
    if (d[i] != s[i]) d[i] = s[i];
  if (n % 8) std::memcpy(reinterpret_cast<char*>(dst) + n / 8 * 8, reinterpret_cast<const char*>(src) + n / 8 * 8, n % 8);
}
#else
void restore_words(void* dst, const void* src, std::size_t n) noexcept { copy_words(dst, src, n); }
#endif

}  // namespace

void snapshot_stack(const tasklet_impl& t, stack_snapshot& into) {
  auto* low = static_cast<const char*>(t.context);
  std::size_t n = static_cast<std::size_t>(t.stack.top() - low);
  if (into.capacity_ < n) {
    into.bytes_ = std::make_unique_for_overwrite<std::byte[]>(n);
    into.capacity_ = n;
  }
  copy_words(into.bytes_.get(), low, n);
  into.size_ = n;
  into.context_ = t.context;
  into.eh_globals_[0] = t.eh_globals[0];
  into.eh_globals_[1] = t.eh_globals[1];
}

bool snapshot_holds(const stack_snapshot& snap, const void* p) noexcept {
  const std::byte* bytes = snap.bytes_.get();
  for (std::size_t i = 0; i + sizeof p <= snap.size_; i += sizeof p) {
    const void* word;
    std::memcpy(&word, bytes + i, sizeof word);
    if (word == p) return true;
  }
  return false;
}

bool snapshot_refresh(stack_snapshot& snap, const void* at, std::size_t n) noexcept {
  const auto* low = static_cast<const char*>(snap.context_);
  const auto* p = static_cast<const char*>(at);
  if (!low || p < low || p + n > low + snap.size_) return false;
  copy_words(snap.bytes_.get() + (p - low), p, n);
  return true;
}

void restore_stack(tasklet_impl& t, const stack_snapshot& from) {
#if defined(__SANITIZE_ADDRESS__)
  // The shadow still describes the rolled-back attempt's frames: start from a clean stack.
  __asan_unpoison_memory_region(t.stack.base, t.stack.size);
#endif
  restore_words(from.context_, from.bytes_.get(), from.size_);
  t.context = from.context_;
  t.eh_globals[0] = from.eh_globals_[0];
  t.eh_globals[1] = from.eh_globals_[1];
}

}  // namespace weft::detail
