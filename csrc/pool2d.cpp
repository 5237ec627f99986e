#include "pool2d.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>


#include "workpool.hpp"

namespace kepsparse {

namespace {

// NaN-propagating max: once m is NaN it stays NaN (every comparison with it is false). In
// the loops below GCC turns it into two compares and a blend per vector.
inline float nanmax(float m, float v) { return (v > m || v != v) ? v : m; }

// The passes are separable: a window's max is the max over its columns of the max over its
// rows. Both passes are plain loops over contiguous (or stride-2) floats, compiled per ISA
// by target_clones (run-time dispatch, baseline wheel): 16 lanes on AVX-512, where the
// former 4-lane SSE2 loop over every tap took 196 us for ResNet-18's stem pooling.

// t[q] = nanmax(t[q], r[q]) for q < n: one more window row into the column maxima
__attribute__((target_clones("avx512f", "avx2", "default")))
void max_rows_into(float* __restrict t, const float* __restrict r, long n) {
    for (long q = 0; q < n; ++q) t[q] = nanmax(t[q], r[q]);
}

// y[ow] = max over the kw taps j of t[ow*2 + j*dw], for ow < Wo (stride 2)
__attribute__((target_clones("avx512f", "avx2", "default")))
void max_cols_s2(float* __restrict y, const float* __restrict t, long Wo, int kw, int dw) {
    for (long ow = 0; ow < Wo; ++ow) y[ow] = t[2 * ow];
    for (int j = 1; j < kw; ++j) {
        const float* tj = t + (long)j * dw;
        for (long ow = 0; ow < Wo; ++ow) y[ow] = nanmax(y[ow], tj[2 * ow]);
    }
}

// the same at stride 1, and at any stride s (not vectorized: rare)
__attribute__((target_clones("avx512f", "avx2", "default")))
void max_cols_s1(float* __restrict y, const float* __restrict t, long Wo, int kw, int dw) {
    for (long ow = 0; ow < Wo; ++ow) y[ow] = t[ow];
    for (int j = 1; j < kw; ++j) {
        const float* tj = t + (long)j * dw;
        for (long ow = 0; ow < Wo; ++ow) y[ow] = nanmax(y[ow], tj[ow]);
    }
}

void max_cols(float* y, const float* t, long Wo, int kw, int dw, int s) {
    for (long ow = 0; ow < Wo; ++ow) {
        float m = t[ow * s];
        for (int j = 1; j < kw; ++j) m = nanmax(m, t[ow * s + (long)j * dw]);
        y[ow] = m;
    }
}

}  // namespace

void max_pool2d_f32(const float* x, long planes, long H, long W, float* y, long Ho, long Wo,
                    int kh, int kw, int sh, int sw, int pt, int pl, int dh, int dw, int threads) {
    const float lowest = -std::numeric_limits<float>::infinity();
    // one padded row per pool slot: column q holds the max over the output row's window
    // rows of x[..][q - pl]; -inf outside the data (set once, never written)
    const long Wp = (Wo - 1) * sw + (long)(kw - 1) * dw + 1;
    const long c0 = pl < Wp ? pl : Wp, c1 = pl + W < Wp ? pl + W : Wp;  // data columns
    // work in the conv's units (~0.02 ns each on one Zen 5 core): a window tap here costs
    // about 10 (ResNet-18's stem pooling: 1.8 M taps in 0.37 ms with the former loop)
    const int nt = threads_for_work(10.0 * planes * Ho * Wo * kh * kw, threads);
    const long items = std::min<long>(planes, 4L * nt);
    // allocated here: the items must not throw
    std::vector<std::vector<float>> rows(nt, std::vector<float>((size_t)Wp, lowest));
    pool_run(items, nt - 1, [&](long item, int slot) {
        float* t = rows[slot].data();
        for (long p = planes * item / items; p < planes * (item + 1) / items; ++p) {
            const float* xp = x + p * H * W;
            float* yp = y + p * Ho * Wo;
            for (long oh = 0; oh < Ho; ++oh) {
                bool first = true;
                for (int i = 0; i < kh; ++i) {
                    const long ih = oh * sh - pt + (long)i * dh;
                    if (ih < 0 || ih >= H || c1 <= c0) continue;
                    const float* xr = xp + ih * W + (c0 - pl);
                    if (first) std::memcpy(t + c0, xr, sizeof(float) * (c1 - c0));
                    else max_rows_into(t + c0, xr, c1 - c0);
                    first = false;
                }
                if (first)  // no window row inside x: every window is empty
                    std::fill(t + c0, t + c1, lowest);
                float* yr = yp + oh * Wo;
                if (sw == 2) max_cols_s2(yr, t, Wo, kw, dw);
                else if (sw == 1) max_cols_s1(yr, t, Wo, kw, dw);
                else max_cols(yr, t, Wo, kw, dw, sw);
            }
        }
    });
}

}  // namespace kepsparse
