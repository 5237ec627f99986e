// Portable instantiation of the sparse-conv tile: GCC vector extensions of 8 floats, which
// the compiler lowers to whatever the baseline target has (two SSE2 registers on x86-64).
#include <cstdint>
#include <cstring>

#include "spconv.hpp"

namespace kepsparse {
namespace {

typedef float vec_t __attribute__((vector_size(32)));
constexpr int LANES = 8;
inline vec_t vzero() { return vec_t{0, 0, 0, 0, 0, 0, 0, 0}; }
inline vec_t vload(const float* p) { vec_t v; std::memcpy(&v, p, sizeof v); return v; }
inline void vstore(float* p, vec_t v) { std::memcpy(p, &v, sizeof v); }
inline vec_t vset1(float x) { return vec_t{x, x, x, x, x, x, x, x}; }
inline vec_t vfma(vec_t a, vec_t b, vec_t acc) { return acc + a * b; }

#include "spconv_tile.inc"

int vmax_generic(int ob) { return ob == 1 ? 4 : ob == 2 ? 2 : ob == 4 ? 1 : 0; }

}  // namespace

const SpconvIsa& spconv_isa_generic() {
    static const SpconvIsa isa{"generic", 8, &vmax_generic, &process, 1, &process_grp};
    return isa;
}

}  // namespace kepsparse
