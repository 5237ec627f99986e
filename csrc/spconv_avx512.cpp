// AVX-512 instantiation of the sparse-conv tile (16 floats per vector, 32 zmm registers).
// Compiled for baseline x86-64 like every file; only the code between push/pop_options
// targets AVX-512, and it is only called after cpu_features() reported avx512f.
#include <cstdint>

#include "spconv.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
// GCC 12 warns that _mm512_undefined_ps() (inside _mm512_max_ps) is uninitialised: it is
// meant to be; the warning is a known false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace kepsparse {
namespace {

typedef __m512 vec_t;
constexpr int LANES = 16;
#define KEPSPARSE_HAS_OB8 1
inline vec_t vzero() { return _mm512_setzero_ps(); }
inline vec_t vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, vec_t v) { _mm512_storeu_ps(p, v); }
inline vec_t vset1(float x) { return _mm512_set1_ps(x); }
inline vec_t vfma(vec_t a, vec_t b, vec_t acc) { return _mm512_fmadd_ps(a, b, acc); }
inline vec_t vadd(vec_t a, vec_t b) { return _mm512_add_ps(a, b); }
// max(0, v); a NaN v stays NaN (vmaxps returns its second operand when either is NaN)
inline vec_t vrelu(vec_t v) { return _mm512_max_ps(_mm512_setzero_ps(), v); }
inline __mmask16 first_n(int m) { return (__mmask16)((1u << m) - 1u); }
inline vec_t vload_n(const float* p, int m) { return _mm512_maskz_loadu_ps(first_n(m), p); }
inline void vstore_n(float* p, vec_t v, int m) { _mm512_mask_storeu_ps(p, first_n(m), v); }
inline vec_t veven(vec_t a, vec_t b) {
    const __m512i idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(a, idx, b);
}

// nonzero when a lane of v is NaN or +-Inf (v*0 is NaN exactly there)
inline unsigned vnonfinite(vec_t v) {
    const vec_t t = _mm512_mul_ps(v, _mm512_setzero_ps());
    return _mm512_cmp_ps_mask(t, t, _CMP_UNORD_Q);
}

#include "spconv_tile.inc"

// output channels x vectors: OB*V accumulators + V inputs + OB broadcasts <= 32 registers
int vmax_avx512(int ob) { return ob == 1 ? 8 : ob == 2 ? 8 : ob == 4 ? 5 : ob == 8 ? 2 : 0; }

}  // namespace
#pragma GCC pop_options

const SpconvIsa& spconv_isa_avx512() {
    static const SpconvIsa isa{"avx512", 16, &vmax_avx512, &process, 6, &process_grp, &pack_s1, &pack_sw2};
    return isa;
}

}  // namespace kepsparse

#else
namespace kepsparse {
static int vmax_none(int) { return 0; }
const SpconvIsa& spconv_isa_avx512() {
    static const SpconvIsa isa{"avx512", 16, &vmax_none, nullptr, 0, nullptr, nullptr, nullptr};
    return isa;
}
}  // namespace kepsparse
#endif
