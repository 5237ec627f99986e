// all_finite: does a float32 buffer hold no NaN/Inf? The boundary check that lets sparse
// kernels keep dense convolution's NaN/Inf propagation (kepsparse.conv.run_conv).
// A float is non-finite iff its exponent bits are all ones; the loop ORs that test over
// blocks and stops at the first bad block. Compiled per ISA by target_clones (run-time
// dispatch, baseline wheel).
#include "finite_scan.hpp"

#include <cstdint>
#include <cstring>

namespace kepsparse {

__attribute__((target_clones("avx512f", "avx2", "default")))
bool all_finite_f32(const float* data, std::size_t n) {
    constexpr std::uint32_t kExp = 0x7f800000u;
    constexpr std::size_t kBlock = 4096;
    for (std::size_t start = 0; start < n; start += kBlock) {
        const std::size_t end = start + kBlock < n ? start + kBlock : n;
        std::uint32_t bad = 0;
        for (std::size_t i = start; i < end; ++i) {
            std::uint32_t u;
            std::memcpy(&u, data + i, sizeof u);
            bad |= static_cast<std::uint32_t>((u & kExp) == kExp);
        }
        if (bad) return false;
    }
    return true;
}

}  // namespace kepsparse
