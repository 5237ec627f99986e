#pragma once
#include <cstddef>

namespace kepsparse {
// True when none of data[0..n) is NaN or +-Inf.
bool all_finite_f32(const float* data, std::size_t n);
}  // namespace kepsparse
