// Private: last-writer locations of tvars (recorded only while an observer is installed).
#pragma once

#include <cstdint>

namespace weft::detail {
void note_write(const void* var, std::uintptr_t location) noexcept;
std::uintptr_t last_write_of(const void* var) noexcept;
}  // namespace weft::detail
