// Throughput of the operations the sparse conv kernels are made of, on this machine's cores:
// 512-bit FMAs, loads (aligned / unaligned, from L1), stores, and the pattern-group kernel's
// inner step (csrc/spconv_tile.inc, grp_micro) with 0-4 output channels per group. Used to
// explain where the group kernel's time goes (benchmarks/results_manual.md, session 3).
//
//   g++ -O3 -mavx512f -mavx2 -mfma benchmarks/microarch.cpp -o /tmp/microarch && /tmp/microarch
//
// Needs AVX-512F. Times are in "cycles" of a clock estimated from the FMA loop, assuming two
// 512-bit FMA pipes (Zen 4/5, Intel server cores); the ratios between lines do not depend on
// that assumption. Run on a quiet machine; each line is the best of 5.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

template <class F>
double best_of(F f) {
    double best = 1e30;
    for (int r = 0; r < 5; ++r) {
        const double t = now();
        f();
        best = std::min(best, now() - t);
    }
    return best;
}

// 10 independent FMA chains (named, so they stay in registers): latency hidden, bound by
// the FMA pipes
__attribute__((noinline)) __m512 fma_loop(long n, __m512 a, __m512 b) {
    __m512 c0 = a, c1 = a, c2 = a, c3 = a, c4 = a, c5 = a, c6 = a, c7 = a, c8 = a, c9 = a;
    for (long i = 0; i < n; ++i) {
        c0 = _mm512_fmadd_ps(c0, b, a); c1 = _mm512_fmadd_ps(c1, b, a);
        c2 = _mm512_fmadd_ps(c2, b, a); c3 = _mm512_fmadd_ps(c3, b, a);
        c4 = _mm512_fmadd_ps(c4, b, a); c5 = _mm512_fmadd_ps(c5, b, a);
        c6 = _mm512_fmadd_ps(c6, b, a); c7 = _mm512_fmadd_ps(c7, b, a);
        c8 = _mm512_fmadd_ps(c8, b, a); c9 = _mm512_fmadd_ps(c9, b, a);
    }
    return _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                         _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)),
                                       _mm512_add_ps(c8, c9)));
}

// 16 loads per iteration from an 8 KB window (L1), OR-ed into 16 chains
template <int OFF>
__attribute__((noinline)) __m512i load_loop(long n, const float* p) {
    __m512i s[16];
    for (auto& v : s) v = _mm512_setzero_si512();
    for (long i = 0; i < n; ++i) {
        const float* q = p + OFF + (i & 31) * 64;
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j)
            s[j] = _mm512_or_si512(s[j], _mm512_castps_si512(_mm512_loadu_ps(q + j * 16)));
    }
    __m512i t = s[0];
    for (int j = 1; j < 16; ++j) t = _mm512_or_si512(t, s[j]);
    return t;
}

__attribute__((noinline)) void store_loop(long n, float* p) {
    const __m512 v = _mm512_set1_ps(1.0f);
    for (long i = 0; i < n; ++i) {
        float* q = p + (i & 31) * 64;
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j) _mm512_storeu_ps(q + j * 16, v);
    }
}

// The group kernel's step (4 positions x 6 vectors of input in registers, then per channel:
// load 6 accumulators, 4 broadcasts x 6 FMAs, store 6), as in spconv_tile.inc
__attribute__((noinline)) void grp_step(const float* __restrict xb, const int32_t* __restrict offs,
                                        const int32_t* __restrict ch_o,
                                        const float* __restrict ch_w, long nch,
                                        float* __restrict buf, long T) {
    __m512 xv[4][6];
    for (int p = 0; p < 4; ++p)
        for (int j = 0; j < 6; ++j) xv[p][j] = _mm512_loadu_ps(xb + offs[p] + j * 16);
    for (long i = 0; i < nch; ++i) {
        float* a = buf + (long)ch_o[i] * T;
        const float* w = ch_w + i * 4;
        __m512 acc[6];
        for (int j = 0; j < 6; ++j) acc[j] = _mm512_loadu_ps(a + j * 16);
        for (int p = 0; p < 4; ++p) {
            const __m512 wb = _mm512_set1_ps(w[p]);
            for (int j = 0; j < 6; ++j) acc[j] = _mm512_fmadd_ps(xv[p][j], wb, acc[j]);
        }
        for (int j = 0; j < 6; ++j) _mm512_storeu_ps(a + j * 16, acc[j]);
    }
}

}  // namespace

int main() {
    const long n_fma = 20000000;
    volatile __m512 sink_f;
    const double t_fma = best_of([&] {
        sink_f = fma_loop(n_fma, _mm512_set1_ps(1.0f), _mm512_set1_ps(0.999f));
    });
    const double ghz = n_fma * 10.0 / 2.0 / t_fma / 1e9;
    std::printf("512-bit FMA: %.2f G/s -> clock %.2f GHz if 2 FMA pipes\n",
                n_fma * 10.0 / t_fma / 1e9, ghz);
    const double cyc = ghz * 1e9;

    std::vector<float> mem(1 << 16, 1.0f);
    float* x = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(mem.data()) + 63) & ~63ul);
    const long n = 2000000;
    volatile __m512i sink_i;
    double t = best_of([&] { sink_i = load_loop<0>(n, x); });
    std::printf("512-bit loads, aligned (L1):   %.2f per cycle\n", n * 16.0 / (t * cyc));
    t = best_of([&] { sink_i = load_loop<3>(n, x); });
    std::printf("512-bit loads, unaligned (L1): %.2f per cycle\n", n * 16.0 / (t * cyc));
    t = best_of([&] { store_loop(n, x); });
    std::printf("512-bit stores (L1):           %.2f per cycle\n", n * 16.0 / (t * cyc));

    // group-kernel step: 8 input channels' planes (row pitch 58, as ResNet-18's 56x56
    // layers; 64-byte aligned base, so most offsets are unaligned as in the kernel), 8 groups
    // each (patterns of 4 positions), a 64-channel tile buffer
    const long Wr = 58, PS = 3488, T = 96;
    const int C = 8, G = C * 8, O = 64;
    std::vector<int32_t> offs(G * 4);
    for (int g = 0; g < G; ++g)
        for (int q = 0; q < 4; ++q) {
            const int k = ((g % 8) * 4 + q * 2 + (g % 8) / 3) % 9;
            offs[g * 4 + q] = (int32_t)((g / 8) * PS + (k / 3) * Wr + (k % 3));
        }
    std::vector<float> buf(O * T, 0.0f);
    std::printf("group step (4 positions x 6 vectors; per channel 24 FMAs):\n");
    for (int nch : {0, 1, 2, 4}) {
        std::vector<int32_t> ch_o(G * 4);
        std::vector<float> ch_w(G * 16, 0.001f);
        for (int i = 0; i < G * 4; ++i) ch_o[i] = (i * 37) % O;
        const int reps = 2000;
        t = best_of([&] {
            for (int r = 0; r < reps; ++r)
                for (int g = 0; g < G; ++g)
                    grp_step(x, &offs[g * 4], &ch_o[g * 4],
                             &ch_w[g * 16], nch, buf.data(), T);
        });
        const double per_group = t * cyc / (reps * (double)G);
        std::printf("  %d channels: %5.1f cycles per group, %.2f FMA per cycle\n", nch, per_group,
                    24.0 * nch / per_group);
    }
    return 0;
}
