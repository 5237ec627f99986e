#include "pool2d.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "workpool.hpp"

namespace kepsparse {

namespace {

// NaN-propagating max: once m is NaN it stays NaN (every comparison with it is false)
inline float nanmax(float m, float v) { return (v > m || v != v) ? v : m; }

#if defined(__SSE2__)
// NaN-propagating max of 4 lanes: maxps(v, m) returns m when either is NaN, so a NaN m
// stays; a NaN v is blended in explicitly.
inline __m128 nanmax4(__m128 m, __m128 v) {
    const __m128 r = _mm_max_ps(v, m);
    const __m128 v_nan = _mm_cmpunord_ps(v, v);
    return _mm_or_ps(_mm_and_ps(v_nan, v), _mm_andnot_ps(v_nan, r));
}
#endif

// y[ow] = max over the nrows padded rows r and the kw taps j of rows[r][ow*SW + j*dw], for
// ow < Wo. SW in {1, 2} has a vector loop keeping 4 outputs in a register across all taps
// (SSE2, the x86-64 baseline); SW == 0 means the run-time stride sw.
template <int SW>
void max_row(float* __restrict y, const float* const* rows, int nrows, long Wo, int kw, int dw,
             int sw) {
    const long s = SW > 0 ? SW : sw;
    const float lowest = -std::numeric_limits<float>::infinity();
    long ow = 0;
#if defined(__SSE2__)
    if (SW == 1 || SW == 2) {
        for (; ow + 4 <= Wo; ow += 4) {
            __m128 m = _mm_set1_ps(lowest);
            for (int r = 0; r < nrows; ++r)
                for (int j = 0; j < kw; ++j) {
                    const float* p = rows[r] + SW * ow + (long)j * dw;
                    const __m128 v = SW == 1 ? _mm_loadu_ps(p)
                                             : _mm_shuffle_ps(_mm_loadu_ps(p), _mm_loadu_ps(p + 4),
                                                              _MM_SHUFFLE(2, 0, 2, 0));
                    m = nanmax4(m, v);
                }
            _mm_storeu_ps(y + ow, m);
        }
    }
#endif
    for (; ow < Wo; ++ow) {
        float m = lowest;
        for (int r = 0; r < nrows; ++r)
            for (int j = 0; j < kw; ++j) m = nanmax(m, rows[r][ow * s + (long)j * dw]);
        y[ow] = m;
    }
}

}  // namespace

void max_pool2d_f32(const float* x, long planes, long H, long W, float* y, long Ho, long Wo,
                    int kh, int kw, int sh, int sw, int pt, int pl, int dh, int dw, int threads) {
    const float lowest = -std::numeric_limits<float>::infinity();
    // padded input rows, one per window row: column q holds x[..][q - pl], -inf outside the
    // data; + 8 floats of slack for the stride-2 vector loads' last 4 lanes. One set of rows
    // per pool slot.
    const long Wp = (Wo - 1) * sw + (long)(kw - 1) * dw + 1;
    const long pitch = Wp + 8;
    const long c0 = pl < Wp ? pl : Wp, c1 = pl + W < Wp ? pl + W : Wp;  // data columns
    // work in the conv's units (~0.02 ns each on one Zen 5 core): a window tap here costs
    // about 10 (ResNet-18's stem pooling: 1.8 M taps in 0.37 ms)
    const int nt = threads_for_work(10.0 * planes * Ho * Wo * kh * kw, threads);
    const long items = std::min<long>(planes, 4L * nt);
    // allocated here: the items must not throw
    std::vector<std::vector<float>> bufs(nt, std::vector<float>((size_t)kh * pitch, lowest));
    std::vector<std::vector<const float*>> row_sets(nt, std::vector<const float*>(kh));
    pool_run(items, nt - 1, [&](long item, int slot) {
        float* buf = bufs[slot].data();
        std::vector<const float*>& rows = row_sets[slot];
        for (long p = planes * item / items; p < planes * (item + 1) / items; ++p) {
            const float* xp = x + p * H * W;
            float* yp = y + p * Ho * Wo;
            for (long oh = 0; oh < Ho; ++oh) {
                int nrows = 0;
                for (int i = 0; i < kh; ++i) {
                    const long ih = oh * sh - pt + (long)i * dh;
                    if (ih < 0 || ih >= H) continue;
                    float* row = buf + (long)nrows * pitch;
                    if (c1 > c0)
                        std::memcpy(row + c0, xp + ih * W + (c0 - pl), sizeof(float) * (c1 - c0));
                    rows[nrows++] = row;
                }
                float* yr = yp + oh * Wo;
                if (sw == 1) max_row<1>(yr, rows.data(), nrows, Wo, kw, dw, sw);
                else if (sw == 2) max_row<2>(yr, rows.data(), nrows, Wo, kw, dw, sw);
                else max_row<0>(yr, rows.data(), nrows, Wo, kw, dw, sw);
            }
        }
    });
}

}  // namespace kepsparse
