// Portable instantiation of the sparse-conv tile: GCC vector extensions of 4 floats, which
// the compiler lowers to whatever the baseline target has (one SSE2 register on x86-64).
#include <cstdint>
#include <cstring>

#include "spconv.hpp"

namespace kepsparse {
namespace {

typedef float vec_t __attribute__((vector_size(16)));
constexpr int LANES = 4;
inline vec_t vzero() { return vec_t{0, 0, 0, 0}; }
inline vec_t vload(const float* p) { vec_t v; std::memcpy(&v, p, sizeof v); return v; }
inline void vstore(float* p, vec_t v) { std::memcpy(p, &v, sizeof v); }
inline vec_t vset1(float x) { return vec_t{x, x, x, x}; }
inline vec_t vfma(vec_t a, vec_t b, vec_t acc) { return acc + a * b; }
inline vec_t vadd(vec_t a, vec_t b) { return a + b; }
inline vec_t vrelu(vec_t v) {  // max(0, v); NaN stays NaN
    for (int l = 0; l < LANES; ++l) v[l] = v[l] < 0.0f ? 0.0f : v[l];
    return v;
}
inline vec_t vload_n(const float* p, int m) {
    vec_t v = vzero();
    std::memcpy(&v, p, sizeof(float) * m);
    return v;
}
inline void vstore_n(float* p, vec_t v, int m) { std::memcpy(p, &v, sizeof(float) * m); }
inline vec_t veven(vec_t a, vec_t b) { return vec_t{a[0], a[2], b[0], b[2]}; }

// nonzero when a lane of v is NaN or +-Inf (v*0 is NaN exactly there)
inline unsigned vnonfinite(vec_t v) {
    unsigned bad = 0;
    for (int i = 0; i < 4; ++i) {
        const float t = v[i] * 0.0f;
        bad |= (unsigned)(t != t);
    }
    return bad;
}

#include "spconv_tile.inc"

int vmax_generic(int ob) { return ob == 1 ? 8 : ob == 2 ? 4 : ob == 4 ? 2 : 0; }

}  // namespace

const SpconvIsa& spconv_isa_generic() {
    static const SpconvIsa isa{"generic", 4, &vmax_generic, &process, 2, &process_grp, &pack_s1, &pack_sw2};
    return isa;
}

}  // namespace kepsparse
