// AVX2+FMA instantiation of the sparse-conv tile (8 floats per vector, 16 ymm registers).
// Compiled for baseline x86-64 like every file; only the code between push/pop_options
// targets AVX2+FMA, and it is only called after cpu_features() reported avx2 and fma.
#include <cstdint>

#include "spconv.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace kepsparse {
namespace {

typedef __m256 vec_t;
constexpr int LANES = 8;
inline vec_t vzero() { return _mm256_setzero_ps(); }
inline vec_t vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, vec_t v) { _mm256_storeu_ps(p, v); }
inline vec_t vset1(float x) { return _mm256_set1_ps(x); }
inline vec_t vfma(vec_t a, vec_t b, vec_t acc) { return _mm256_fmadd_ps(a, b, acc); }
inline vec_t vadd(vec_t a, vec_t b) { return _mm256_add_ps(a, b); }
// max(0, v); a NaN v stays NaN (vmaxps returns its second operand when either is NaN)
inline vec_t vrelu(vec_t v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }
inline __m256i first_n(int m) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(m), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline vec_t vload_n(const float* p, int m) { return _mm256_maskload_ps(p, first_n(m)); }
inline void vstore_n(float* p, vec_t v, int m) { _mm256_maskstore_ps(p, first_n(m), v); }
inline vec_t veven(vec_t a, vec_t b) {
    const __m256 t = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a2 b0 b2 | a4 a6 b4 b6
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

// nonzero when a lane of v is NaN or +-Inf (v*0 is NaN exactly there)
inline unsigned vnonfinite(vec_t v) {
    const vec_t t = _mm256_mul_ps(v, _mm256_setzero_ps());
    return (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(t, t, _CMP_UNORD_Q));
}

#include "spconv_tile.inc"

// output channels x vectors: OB*V accumulators + V inputs + OB broadcasts <= 16 registers
int vmax_avx2(int ob) { return ob == 1 ? 8 : ob == 2 ? 5 : ob == 4 ? 2 : 0; }

}  // namespace
#pragma GCC pop_options

const SpconvIsa& spconv_isa_avx2() {
    static const SpconvIsa isa{"avx2", 8, &vmax_avx2, &process, 2, &process_grp, &pack_s1, &pack_sw2};
    return isa;
}

}  // namespace kepsparse

#else
namespace kepsparse {
static int vmax_none(int) { return 0; }
const SpconvIsa& spconv_isa_avx2() {
    static const SpconvIsa isa{"avx2", 8, &vmax_none, nullptr, 0, nullptr, nullptr, nullptr};
    return isa;
}
}  // namespace kepsparse
#endif
