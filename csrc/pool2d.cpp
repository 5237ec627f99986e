#include "pool2d.hpp"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <vector>

#include "cpu_features.hpp"
#include "workpool.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KEPSPARSE_POOL_AVX512 1
#endif

namespace kepsparse {

namespace {

// NaN-propagating max: once m is NaN it stays NaN (every comparison with it is false). In
// the loops below GCC turns it into two compares and a blend per vector.
inline float nanmax(float m, float v) { return (v > m || v != v) ? v : m; }

// The window geometry of a call (see pool2d.hpp); Wp: padded row length, [c0, c1): its
// data columns.
struct PoolGeom {
    long H, W, Ho, Wo, Wp, c0, c1;
    int kh, kw, sh, sw, pt, pl, dh, dw;
};

// Window row i of output row oh: its first data column (c0) in the input plane xp, or null
// when that row lies outside x (padding, ceil mode) or the window has no data column.
inline const float* window_row(const float* xp, const PoolGeom& g, long oh, int i) {
    const long ih = oh * g.sh - g.pt + (long)i * g.dh;
    if (ih < 0 || ih >= g.H || g.c1 <= g.c0) return nullptr;
    return xp + ih * g.W + (g.c0 - g.pl);
}

// One plane, separably: a window's max is the max over its columns of the max over its
// rows. t (Wp floats, -inf outside [c0, c1)) takes an output row's column maxima, then the
// row's outputs take the max of kw of them. The inner loops run over contiguous (or
// stride-2) floats; the function is compiled per ISA by target_clones (run-time dispatch,
// baseline wheel). On AVX-512 CPUs column strides 1 and 2 take max_pool_plane_avx512
// below instead. One call per plane (output rows [oh0, oh1)):
// per-row calls of the same loops spent most of their time entering and leaving them.
__attribute__((target_clones("avx512f", "avx2", "default")))
void max_pool_plane(const float* __restrict xp, float* __restrict yp, float* __restrict t,
                    const PoolGeom& g, long oh0, long oh1) {
    const float lowest = -std::numeric_limits<float>::infinity();
    const long n = g.c1 - g.c0;
    float* __restrict td = t + g.c0;
    for (long oh = oh0; oh < oh1; ++oh) {
        bool first = true;
        for (int i = 0; i < g.kh; ++i) {
            const float* __restrict xr = window_row(xp, g, oh, i);
            if (!xr) continue;
            if (first)
                for (long q = 0; q < n; ++q) td[q] = xr[q];
            else
                for (long q = 0; q < n; ++q) td[q] = nanmax(td[q], xr[q]);
            first = false;
        }
        if (first)  // no window row inside x (or no data column): the column maxima are -inf
            for (long q = 0; q < n; ++q) td[q] = lowest;
        float* __restrict yr = yp + oh * g.Wo;
        const long Wo = g.Wo;
        if (g.sw == 2) {
            for (long ow = 0; ow < Wo; ++ow) yr[ow] = t[2 * ow];
            for (int j = 1; j < g.kw; ++j) {
                const float* tj = t + (long)j * g.dw;
                for (long ow = 0; ow < Wo; ++ow) yr[ow] = nanmax(yr[ow], tj[2 * ow]);
            }
        } else if (g.sw == 1) {
            for (long ow = 0; ow < Wo; ++ow) yr[ow] = t[ow];
            for (int j = 1; j < g.kw; ++j) {
                const float* tj = t + (long)j * g.dw;
                for (long ow = 0; ow < Wo; ++ow) yr[ow] = nanmax(yr[ow], tj[ow]);
            }
        } else {
            for (long ow = 0; ow < Wo; ++ow) {
                float m = t[ow * g.sw];
                for (int j = 1; j < g.kw; ++j) m = nanmax(m, t[ow * g.sw + (long)j * g.dw]);
                yr[ow] = m;
            }
        }
    }
}

#if KEPSPARSE_POOL_AVX512
// Slack floats after a row buffer t (Wp floats): the AVX-512 horizontal pass loads whole
// vectors, masked-off lanes included, up to Wp + 30 (the last block's last window: its
// first column (Wo-1)*sw + (kw-1)*dw = Wp - 1, plus 2*16 - 1 at column stride 2).
constexpr long T_SLACK = 64;

#pragma GCC push_options
#pragma GCC target("avx512f")
// GCC 12 warns that _mm512_undefined_ps() (inside _mm512_max_ps) is uninitialised: it is
// meant to be; the warning is a known false positive (as in spconv_avx512.cpp).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// max_pool_plane for column stride 1 or 2 on AVX-512, with no scalar code: the passes run
// over whole vectors, tails masked (GCC's vectorised loops of the generic version ended in
// scalar remainders whose branches mispredicted on random data: ~60 ns per 56-wide output
// row). Same results bit for bit: nanmax(m, v) is max(v, m) (m on equal values, so +0/-0
// keep the first window position's sign, as `v > m` does), then v where v is NaN.
// t: Wp + T_SLACK floats, -inf outside [c0, c1) (only [c0, c1) is written).
inline __m512 nanmax16(__m512 m, __m512 v) {
    const __m512 r = _mm512_max_ps(v, m);  // m when either is NaN: NaN m stays NaN
    return _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v);
}
inline __mmask16 first_lanes(long m) { return m >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << m) - 1u); }

void max_pool_plane_avx512(const float* __restrict xp, float* __restrict yp, float* __restrict t,
                           const PoolGeom& g, long oh0, long oh1) {
    const __m512 lowest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    const long n = g.c1 - g.c0;
    float* __restrict td = t + g.c0;
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (long oh = oh0; oh < oh1; ++oh) {
        // column maxima of the window rows inside x, over the data columns
        bool first = true;
        for (int i = 0; i < g.kh; ++i) {
            const float* __restrict xr = window_row(xp, g, oh, i);
            if (!xr) continue;
            for (long q = 0; q < n; q += 16) {
                const __mmask16 k = first_lanes(n - q);
                const __m512 v = _mm512_maskz_loadu_ps(k, xr + q);
                const __m512 m = first ? v : nanmax16(_mm512_maskz_loadu_ps(k, td + q), v);
                _mm512_mask_storeu_ps(td + q, k, m);
            }
            first = false;
        }
        if (first)  // no window row inside x (or no data column): the column maxima are -inf
            for (long q = 0; q < n; q += 16) _mm512_mask_storeu_ps(td + q, first_lanes(n - q), lowest);
        // row maxima of the kw window columns, 16 outputs at a time
        float* __restrict yr = yp + oh * g.Wo;
        for (long ow = 0; ow < g.Wo; ow += 16) {
            const __mmask16 k = first_lanes(g.Wo - ow);
            __m512 m = lowest;
            for (int j = 0; j < g.kw; ++j) {
                const float* tj = t + ow * g.sw + (long)j * g.dw;
                const __m512 v = g.sw == 2
                    ? _mm512_permutex2var_ps(_mm512_loadu_ps(tj), even, _mm512_loadu_ps(tj + 16))
                    : _mm512_loadu_ps(tj);
                m = j == 0 ? v : nanmax16(m, v);
            }
            _mm512_mask_storeu_ps(yr + ow, k, m);
        }
    }
}
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

}  // namespace

void max_pool2d_f32(const float* x, long planes, long H, long W, float* y, long Ho, long Wo,
                    int kh, int kw, int sh, int sw, int pt, int pl, int dh, int dw, int threads) {
    const float lowest = -std::numeric_limits<float>::infinity();
    PoolGeom g{H, W, Ho, Wo, 0, 0, 0, kh, kw, sh, sw, pt, pl, dh, dw};
    g.Wp = (Wo - 1) * sw + (long)(kw - 1) * dw + 1;
    g.c0 = std::min<long>(pl, g.Wp);
    g.c1 = std::max(g.c0, std::min<long>(pl + W, g.Wp));
    // work in the conv's units (~0.02 ns each on one Zen 5 core): a window tap here costs
    // about 10 (ResNet-18's stem pooling: 1.8 M taps in 0.37 ms with the former loop)
    const int nt = threads_for_work(10.0 * planes * Ho * Wo * kh * kw, threads);
    // one padded row per pool slot, -inf outside the data columns (never written there);
    // allocated here: the items must not throw
#if KEPSPARSE_POOL_AVX512
    // KEPSPARSE_POOL_GENERIC=1 (read once) keeps the portable loop: tests compare the two
    static const bool avx512 = detect_cpu_features().avx512f && !std::getenv("KEPSPARSE_POOL_GENERIC");
    const bool vec = avx512 && (sw == 1 || sw == 2);
    const size_t row_floats = (size_t)g.Wp + (vec ? T_SLACK : 0);
#else
    const size_t row_floats = (size_t)g.Wp;
#endif
    std::vector<std::vector<float>> rows(nt, std::vector<float>(row_floats, lowest));
    // Thread slot k pools output rows [k*Ho/nt, (k+1)*Ho/nt) of every plane
    // (pool_run_owned): the input rows a conv's thread k wrote (its own pixel tiles, the
    // same part of the image) and the output rows the next conv's thread k packs. Split by
    // planes, each thread read half its input from the other's cache (benchmarks/README.md,
    // "Threads and cache lines").
    pool_run_owned(nt, nt - 1, [&](long k, int slot) {
        const long oh0 = Ho * k / nt, oh1 = Ho * (k + 1) / nt;
        for (long p = 0; p < planes; ++p) {
#if KEPSPARSE_POOL_AVX512
            if (vec) {
                max_pool_plane_avx512(x + p * H * W, y + p * Ho * Wo, rows[slot].data(), g, oh0, oh1);
                continue;
            }
#endif
            max_pool_plane(x + p * H * W, y + p * Ho * Wo, rows[slot].data(), g, oh0, oh1);
        }
    });
}

}  // namespace kepsparse
