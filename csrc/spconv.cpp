// Sparse convolution engine: plan checks, input packing, work split over the pool (workpool.hpp), ISA dispatch.
// The register-tiled inner loops live in spconv_<isa>.cpp (spconv_tile.inc).
#include "spconv.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "cpu_features.hpp"
#include "finite_scan.hpp"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "spconv_api.hpp"
#include "workpool.hpp"

namespace kepsparse {

namespace {

// 64-byte aligned growable scratch, reused across calls by the thread that owns it.
struct Scratch {
    float* p = nullptr;
    size_t n = 0;
    ~Scratch() { std::free(p); }
    float* get(size_t count) {
        if (count > n) {
            std::free(p);
            const size_t bytes = ((count * sizeof(float) + 63) / 64) * 64;
            p = static_cast<float*>(std::aligned_alloc(64, bytes));
            if (!p) { n = 0; throw std::bad_alloc(); }
            n = count;
        }
        return p;
    }
};

}  // namespace

const SpconvIsa* spconv_isa_by_name(const std::string& name) {
    const CpuFeatures f = detect_cpu_features();
    if (name == "avx512") {
        if (!f.avx512f || !f.avx2 || !f.fma) throw std::runtime_error("this CPU lacks AVX-512F");
        return &spconv_isa_avx512();
    }
    if (name == "avx2") {
        if (!f.avx2 || !f.fma) throw std::runtime_error("this CPU lacks AVX2+FMA");
        return &spconv_isa_avx2();
    }
    if (name == "generic") return &spconv_isa_generic();
    throw std::invalid_argument("unknown ISA '" + name + "' (avx512, avx2, generic)");
}

int spconv_tile_vectors(const std::string& isa, int ob) {
    const SpconvIsa* I = (isa == "avx512")  ? &spconv_isa_avx512()
                         : (isa == "avx2") ? &spconv_isa_avx2()
                         : (isa == "generic") ? &spconv_isa_generic() : nullptr;
    if (!I) throw std::invalid_argument("unknown ISA '" + isa + "'");
    return I->process ? I->vmax(ob) : 0;
}

void spconv_check_plan(const SpconvPlan& p) {
    auto fail = [](const std::string& m) { throw std::invalid_argument("SpconvPlan: " + m); };
    if (p.O <= 0 || p.Ctot <= 0 || p.KH <= 0 || p.KW <= 0) fail("non-positive shape");
    if (p.OB != 1 && p.OB != 2 && p.OB != 4 && p.OB != 8) fail("OB must be 1, 2, 4 or 8");
    if ((long)p.out_ch.size() != p.nblocks * p.OB) fail("out_ch length != nblocks*OB");
    if (p.nblocks != (p.O + p.OB - 1) / p.OB) fail("nblocks != ceil(O/OB)");
    // every output channel exactly once: the kernel writes y only through out_ch, so a
    // missing channel would leave its plane of y uninitialised
    std::vector<char> seen(p.O, 0);
    long listed = 0;
    for (int32_t o : p.out_ch) {
        if (o < -1 || o >= p.O) fail("out_ch out of range");
        if (o >= 0) {
            if (seen[o]) fail("output channel " + std::to_string(o) + " listed twice");
            seen[o] = 1;
            ++listed;
        }
    }
    if (listed != p.O) {
        const long missing = (long)(std::find(seen.begin(), seen.end(), 0) - seen.begin());
        fail("output channel " + std::to_string(missing) +
             " missing from out_ch (every channel 0..O-1 must appear exactly once)");
    }
    const long KK = (long)p.KH * p.KW;
    if ((long)p.Ctot * KK >= (1L << 31)) fail("Ctot*KH*KW too large");
    const int64_t nE = (int64_t)p.ck.size();
    if ((int64_t)p.w.size() != nE * p.OB) fail("w length != entries*OB");
    for (int32_t k : p.ck)
        if (k < 0 || k >= p.Ctot * KK) fail("ck out of range");
    if (p.ncg != (p.Ctot + 7) / 8) fail("ncg != ceil(Ctot/8)");
    const long stride = p.ncg + 1;
    if ((long)p.cptr.size() != p.nblocks * stride) fail("cptr length != nblocks*(ncg+1)");
    int64_t prev = 0;
    for (long b = 0; b < p.nblocks; ++b) {
        if (p.cptr[b * stride] != prev) fail("cptr blocks not contiguous");
        for (long g = 0; g < p.ncg; ++g) {
            const int64_t s = p.cptr[b * stride + g], e = p.cptr[b * stride + g + 1];
            if (e < s || e > nE) fail("cptr decreasing or beyond the entries");
            for (int64_t i = s; i < e; ++i)
                if (p.ck[i] / KK < 8 * g || p.ck[i] / KK >= 8 * (g + 1))
                    fail("entry outside its channel group");
        }
        prev = p.cptr[b * stride + p.ncg];
    }
    if (prev != nE) fail("cptr does not cover all entries");
}

// Input packing. Image n, channel ci becomes a plane of PS floats holding sh*sw phase
// planes of Hra rows x Wr columns: phase (ra, cb), row r, column q is padded input
// Xp[r*sh + ra][q*sw + cb] (0 outside the data). With sw == 1 the right padding of a row and
// the left padding of the next one share a gap of g = max(pl, pr, ...) columns (Wr = W + g),
// data at columns [pl, pl + W); reads past the row end land in the next row's left gap.
// The last row (Hra = Hr + 1) is zeros, for such wrapped reads.
namespace {

// Short copies and fills inline (a packed row is often only 8-60 floats, where a libc call
// costs more than the copy); long ones through libc. n <= 0 does nothing.
inline void zero_floats(float* p, long n) {
    if (n >= 64) { std::memset(p, 0, sizeof(float) * n); return; }
    long k = 0;
#if defined(__SSE2__)
    for (; k + 4 <= n; k += 4) _mm_storeu_ps(p + k, _mm_setzero_ps());
#endif
    for (; k < n; ++k) p[k] = 0.0f;
}

inline void copy_floats(float* d, const float* s, long n) {
    if (n >= 64) { std::memcpy(d, s, sizeof(float) * n); return; }
    long k = 0;
#if defined(__SSE2__)
    for (; k + 4 <= n; k += 4) _mm_storeu_ps(d + k, _mm_loadu_ps(s + k));
#endif
    for (; k < n; ++k) d[k] = s[k];
}

// One plan of either kind: bp (register blocks) or gp (pattern groups). Everything here
// depends on sizes only (a's pointers are not read).
void build_layout(SpconvLayout& L, const SpconvPlan* bp, const GroupPlan* gp,
                  const std::string& isa_name, const ConvArgs& a) {
    const long N = a.N, H = a.H, W = a.W, Ho = a.Ho, Wo = a.Wo;
    const int sh = a.sh, sw = a.sw, pt = a.pt, pb = a.pb, pl = a.pl, pr = a.pr, dh = a.dh,
              dw = a.dw;
    if (N <= 0 || H <= 0 || W <= 0) throw std::invalid_argument("x has an empty dimension");
    if (sh < 1 || sw < 1 || dh < 1 || dw < 1 || pt < 0 || pb < 0 || pl < 0 || pr < 0)
        throw std::invalid_argument("stride/dilation must be >= 1 and padding >= 0");
    const SpconvIsa& isa = *spconv_isa_by_name(isa_name);
    const int vmax = !isa.process ? 0 : bp ? isa.vmax(bp->OB) : isa.grp_v;
    if (vmax <= 0) throw std::invalid_argument("no tile for this plan on this ISA");
    if (vmax > 8) throw std::logic_error("tiles hold at most 8 vectors (spconv_tile.inc)");
    const long C = bp ? bp->Ctot : gp->Ctot, KH = bp ? bp->KH : gp->KH, KW = bp ? bp->KW : gp->KW;
    const long KK = KH * KW;
    const long Hp = H + pt + pb, Wp = W + pl + pr;
    const long span_h = (long)dh * (KH - 1) + 1, span_w = (long)dw * (KW - 1) + 1;
    // checked before the division below: C++ division truncates toward zero, so a padded
    // input up to one stride smaller than the dilated kernel would still give Ho == 1
    if (Hp < span_h || Wp < span_w)
        throw std::invalid_argument(
            "padded input " + std::to_string(Hp) + "x" + std::to_string(Wp) +
            " is smaller than the dilated kernel " + std::to_string(span_h) + "x" +
            std::to_string(span_w) + ": no output position");
    if (Ho != (Hp - span_h) / sh + 1 || Wo != (Wp - span_w) / sw + 1)
        throw std::invalid_argument(
            "output size " + std::to_string(Ho) + "x" + std::to_string(Wo) +
            " does not match the geometry (expected " + std::to_string((Hp - span_h) / sh + 1) +
            "x" + std::to_string((Wp - span_w) / sw + 1) + ")");

    long Wr, g = 0;
    if (sw == 1) {
        g = std::max<long>({(long)pl, (long)pr, (long)pl + pr - (long)dw * (KW - 1)});
        Wr = W + g;
    } else {
        Wr = (Wp + sw - 1) / sw;
    }
    const long Hr = (Hp + sh - 1) / sh, Hra = Hr + 1;
    const long nph = (long)sh * sw;
    const long PS = ((nph * Hra * Wr) + 15) / 16 * 16;
    const long lanes = isa.lanes, T = (long)vmax * lanes;
    const long npix = Ho * Wr;
    const long ntiles = (npix + T - 1) / T;

    // offsets of every (ci, k) in a packed image
    std::vector<long> tab(KK);
    long maxtab = 0;
    for (long kh = 0; kh < KH; ++kh)
        for (long kw = 0; kw < KW; ++kw) {
            const long qh = kh * dh, qw = kw * dw;
            const long t = ((qh % sh) * sw + (qw % sw)) * Hra * Wr + (qh / sh) * Wr + qw / sw;
            tab[kh * KW + kw] = t;
            maxtab = std::max(maxtab, t);
        }
    if ((double)C * PS + ntiles * T + maxtab >= 2147483647.0)
        throw std::invalid_argument("one image is too large for 32-bit offsets");
    L.off.assign(C * KK, 0);
    for (long ci = 0; ci < C; ++ci)
        for (long k = 0; k < KK; ++k) L.off[ci * KK + k] = (int32_t)(ci * PS + tab[k]);

    SpconvCtx& c = L.ctx;
    c = SpconvCtx();
    c.plan = bp;
    if (bp) {
        c.out_ch = bp->out_ch.data();
        c.ck = bp->ck.data();
        c.w = bp->w.data();
        c.cptr = bp->cptr.data();
        c.O = bp->O;
        c.OB = bp->OB;
        c.ncg = bp->ncg;
    } else {
        c.g_ci = gp->grp_ci.data();
        c.g_k = gp->grp_k.data();
        c.g_np = gp->grp_np.data();
        c.g_cho = gp->ch_o.data();
        c.g_ptr = gp->grp_ptr.data();
        c.g_chunk_ptr = gp->chunk_ptr.data();
        c.g_chw = gp->ch_w.data();
        c.g_och = gp->och;
        c.O = gp->O;
    }
    c.KK = (int)KK;
    c.img_stride = C * PS;
    c.Ho = Ho;
    c.Wo = Wo;
    c.Wr = Wr;
    c.npix = npix;
    c.lanes = (int)lanes;
    c.vmax = vmax;
    c.T = T;
    // c-block: the input one tile reads from a c-block's planes stays in cache (L1 + a
    // little of L2: 48 KB measured best on Zen 4 for ResNet-18 layers, flat from 24 to 96)
    {
        const long rows_span = ((KH - 1) * dh) / sh * Wr + ((KW - 1) * dw) / sw;
        const long per_ch = (std::min(T, npix) + rows_span + 16) * std::min<long>(nph, KK) *
                            (long)sizeof(float);
        const long ch = std::max<long>(8, (48L * 1024) / std::max<long>(per_ch, 1));
        c.cgb = (int)std::max<long>(1, ch / 8);
    }

    // Threads: at most one per work_per_thread() of work (workpool.hpp: a hand-off to a
    // helper can cost more than a small layer's whole run); where one per a tenth of that
    // would give more, the call chooses by measured time (SpconvLayout::choice).
    // work ~ FMA lanes (stored weights x output pixels) + floats packed and written.
    const double lanes_per_pixel = bp ? (double)bp->ck.size() * bp->OB
                                      : (double)gp->ch_o.size() * 4.0;
    const double work = lanes_per_pixel * (double)npix * N + (double)N * C * PS +
                        (double)N * (bp ? bp->O : gp->O) * npix;
    L.nblocks = bp ? bp->nblocks : gp->nchunks;
    L.ntiles = ntiles;
    const long base_items = N * ntiles;
    long max_chunk_blocks = 1;
    for (int k = 0; k < 2; ++k) {
        SpconvLayout::Split& sp = L.split[k];
        sp.nt = threads_for_work(work, a.threads, k == 0 ? 0.0 : work_per_thread() / 10);
        long nchunks = std::max<long>(1, (4L * sp.nt + base_items - 1) / base_items);
        nchunks = bp ? std::min(nchunks, L.nblocks) : gp->nchunks;  // group plans: fixed chunks
        sp.nchunks = nchunks;
        sp.items = base_items * nchunks;
        max_chunk_blocks = std::max(max_chunk_blocks, (L.nblocks + nchunks - 1) / nchunks);
    }
    L.buf_floats = (size_t)(bp ? max_chunk_blocks * bp->OB * T : gp->och * T);
    // tile reads may run past the last plane (garbage lanes): slack of zeros after it
    L.slack = ntiles * T + maxtab + 64 - npix;
    L.vector_pack = (sw == 1 && sh == 1) || sw == 2;
    L.isa = &isa;
    L.gp = gp;
    L.N = N;
    L.C = C;
    L.H = H;
    L.W = W;
    L.sh = sh;
    L.sw = sw;
    L.pt = pt;
    L.pl = pl;
    L.Hra = Hra;
    L.nph = nph;
    L.PS = PS;
}

}  // namespace

SpconvLayout::SpconvLayout(const SpconvPlan* bp, const GroupPlan* gp, const std::string& isa,
                           const ConvArgs& a) {
    build_layout(*this, bp, gp, isa, a);
}

// Packs x (strides in floats: x_img, x_plane, x_row) into xr in L's layout. Either planes
// split over nt threads, or (bands, stride 1 only) thread slot k packs data rows
// [bands[k], bands[k+1]) of every channel, rows counted over the images (n*H + h): the rows
// its own tiles read first (pool_run_owned). False when check_finite and a vector packer
// copied a NaN/Inf (the scalar packer does not look: its caller scans x first).
static bool pack_input(const SpconvLayout& L, int nt, const float* x, long x_img, long x_plane,
                       long x_row, float* xr, bool check_finite, const long* bands) {
    const long H = L.H, W = L.W, C = L.C, PS = L.PS, Hra = L.Hra, nph = L.nph;
    const long Wr = L.ctx.Wr;
    const int sh = L.sh, sw = L.sw, pt = L.pt, pl = L.pl;
    const SpconvIsa& isa = *L.isa;
    // false: the plane holds a NaN/Inf (vector packers only)
    auto pack_plane = [&](long nc) -> bool {
        const float* src = x + (nc / C) * x_img + (nc % C) * x_plane;
        float* dst = xr + nc * PS;
        if (sw == 1 && sh == 1) {
            return isa.pack_s1(src, x_row, dst, H, W, Wr, pt, pl, PS);  // (spconv_tile.inc)
        } else if (sw == 2) {
            return isa.pack_sw2(src, x_row, dst, H, W, Wr, Hra, sh, pt, pl, PS);  // even/odd split
        } else {
            // data columns of phase (ra, cb): q in [qlo, qhi) reads source column q*sw + cb - pl
            for (long ra = 0; ra < sh; ++ra)
                for (long cb = 0; cb < sw; ++cb) {
                    float* ph = dst + (ra * sw + cb) * Hra * Wr;
                    const long qlo = std::min<long>(Wr, std::max<long>(0, (pl - cb + sw - 1) / sw));
                    const long last = W - 1 + pl - cb;  // q*sw <= last (floor: last may be < 0)
                    const long qhi =
                        last < 0 ? qlo : std::max<long>(qlo, std::min<long>(Wr, last / sw + 1));
                    for (long r = 0; r < Hra; ++r) {
                        const long R = r * sh + ra - pt;  // data row
                        float* drow = ph + r * Wr;
                        if (R < 0 || R >= H) {
                            zero_floats(drow, Wr);
                            continue;
                        }
                        const float* srow = src + R * x_row + (qlo * sw + cb - pl);
                        zero_floats(drow, qlo);
                        if (sw == 1) {
                            copy_floats(drow + qlo, srow, qhi - qlo);
                        } else {
                            for (long q = 0; q < qhi - qlo; ++q) drow[qlo + q] = srow[q * sw];
                        }
                        zero_floats(drow + qhi, Wr - qhi);
                    }
                }
            zero_floats(dst + nph * Hra * Wr, PS - nph * Hra * Wr);
            return true;
        }
    };

    std::atomic<bool> finite{true};
    if (bands) {
        // Data row h of a plane, with the gap after it, is the packed floats
        // [start(h), start(h + 1)); start(0) = 0 takes the zero rows above, start(H) = PS
        // the ones below. So a band of rows is one pack_s1 call per plane.
        auto start = [&](long h) { return h == 0 ? 0 : h == H ? PS : (pt + h) * Wr + pl; };
        pool_run_owned(nt, nt - 1, [&](long k, int) {
            bool ok = true;
            for (long n = bands[k] / H; n < L.N && n * H < bands[k + 1]; ++n) {
                const long ha = std::max(bands[k] - n * H, 0L), hb = std::min(bands[k + 1] - n * H, H);
                if (ha >= hb) continue;
                for (long c = 0; c < C; ++c) {
                    const float* src = x + n * x_img + c * x_plane + ha * x_row;
                    float* dst = xr + (n * C + c) * PS + start(ha);
                    const long len = start(hb) - start(ha);
                    ok &= ha == 0 ? isa.pack_s1(src, x_row, dst, hb, W, Wr, pt, pl, len)
                                  : isa.pack_s1(src, x_row, dst, hb - ha, W, Wr, 0, 0, len);
                }
            }
            if (!ok) finite.store(false, std::memory_order_relaxed);
        });
        return !check_finite || finite.load(std::memory_order_relaxed);
    }
    const long planes = L.N * C;
    const long pack_items = std::min<long>(planes, 4L * nt);
    pool_run(pack_items, nt - 1, [&](long item, int) {
        bool ok = true;
        for (long nc = planes * item / pack_items; nc < planes * (item + 1) / pack_items; ++nc)
            ok &= pack_plane(nc);
        if (!ok) finite.store(false, std::memory_order_relaxed);
    });
    return !check_finite || finite.load(std::memory_order_relaxed);
}

bool spconv_execute(const SpconvLayout& L, const ConvArgs& a, bool check_finite) {
    if (a.N != L.N || a.H != L.H || a.W != L.W)
        throw std::invalid_argument("x's shape is not the one this call was set up for");
    if (a.x_packed && !L.packed_input())
        throw std::invalid_argument("a packed input needs a stride-1 layout");
    const auto t0 = std::chrono::steady_clock::now();
    const int pick = L.split[0].nt == L.split[1].nt ? 0 : L.choice.pick();
    const SpconvLayout::Split& sp = L.split[pick];
    const float* x = a.x;
    const long N = L.N, H = L.H, W = L.W, C = L.C, img = L.ctx.img_stride;
    const int nt = std::max(L.split[0].nt, L.split[1].nt);  // tile buffers for either
    const SpconvIsa& isa = *L.isa;
    const long O = L.ctx.O, Ho = L.ctx.Ho, Wo = L.ctx.Wo;
    // strides in floats; 0: contiguous NCHW
    auto or_default = [](long stride, long contiguous) { return stride ? stride : contiguous; };
    const long x_row = or_default(a.x_row, W), x_plane = or_default(a.x_plane, H * W),
               x_img = or_default(a.x_img, C * H * W);

    thread_local Scratch xs;
    SpconvCtx c = L.ctx;
    c.off = L.off.data();
    c.xr = a.x_packed ? x - L.data_offset()
                      : xs.get((size_t)(N * img + std::max(0L, L.slack) + 64));
    c.y = a.y;
    c.bias = a.bias;
    c.res = a.residual;
    c.relu = a.relu;
    c.y_row = or_default(a.y_row, Wo);
    c.y_plane = or_default(a.y_plane, Ho * Wo);
    c.y_img = or_default(a.y_img, O * Ho * Wo);
    c.r_row = or_default(a.r_row, Wo);
    c.r_plane = or_default(a.r_plane, Ho * Wo);
    c.r_img = or_default(a.r_img, O * Ho * Wo);
    c.y_nonfinite = a.y_nonfinite;

    // tile buffers, one per pool slot, kept across calls by the calling thread
    static thread_local std::vector<std::unique_ptr<Scratch>> tile_bufs;
    if ((int)tile_bufs.size() < nt) tile_bufs.resize(nt);
    for (int t = 0; t < nt; ++t) {
        if (!tile_bufs[t]) tile_bufs[t].reset(new Scratch());
        tile_bufs[t]->get(L.buf_floats);
    }
    const std::unique_ptr<Scratch>* bufs = tile_bufs.data();

    if (!a.x_packed) {
        // the vector packers check for NaN/Inf as they copy; the scalar one does not
        if (check_finite && !L.vector_pack) {
            if (x_row == W && x_plane == H * W && x_img == C * H * W) {
                if (!all_finite_f32(x, (size_t)(N * C * H * W))) return false;
            } else {
                for (long nc = 0; nc < N * C; ++nc)
                    for (long h = 0; h < H; ++h)
                        if (!all_finite_f32(x + (nc / C) * x_img + (nc % C) * x_plane + h * x_row,
                                            (size_t)W))
                            return false;
            }
        }
    }
    const long nchunks = sp.nchunks, ntiles = L.ntiles, nblocks = L.nblocks;
    const bool groups = L.gp != nullptr;
    // Items (tile x chunk) go to the threads in runs of consecutive ones, 8 runs per thread:
    // one item at a time, the threads alternated between neighbouring tiles, which share
    // the cache lines at their output boundaries and their input rows (ResNet-18's stem at
    // 2 threads: 914-951 us in single items, 564-687 in runs; 1 thread ~1.09 ms either way).
    // Thread slot k owns runs [k*runs/nt, (k+1)*runs/nt) (pool_run_owned): the same pixels
    // in every call of this shape, and (stride 1) it packs the input rows they read.
    const long items = sp.items;
    const long runs = std::min<long>(items, 8L * sp.nt);
    if (!a.x_packed) {
        float* xr = const_cast<float*>(c.xr);  // this call's own scratch
        long bands[257];
        // Stride 1 only: with column stride 2 (phase planes), bands of phase rows measured
        // slower than planes in a slow phase (a 64-channel 56x56 layer: 178-179 vs 149 us;
        // ResNet-18 end to end: 6.0-7.2 vs 5.35-6.0 ms).
        const bool by_rows = sp.nt > 1 && sp.nt < 257 && L.sh == 1 && L.sw == 1 && L.vector_pack;
        if (by_rows) {
            // slot k's first item -> its first output row -> the data row that row starts on
            const long Wr = L.ctx.Wr, T = L.ctx.T, head = (long)L.pt * Wr + L.pl;
            bands[0] = 0;
            bands[sp.nt] = N * H;
            for (int k = 1; k < sp.nt; ++k) {
                const long it = items * (runs * k / sp.nt) / runs;
                const long nt_idx = it / nchunks, n = nt_idx / ntiles;
                const long i0 = (nt_idx % ntiles) * T;
                const long h = std::min(H, std::max(0L, (i0 - head + Wr - 1) / Wr));
                bands[k] = std::max(bands[k - 1], n * H + h);
            }
        }
        if (!pack_input(L, sp.nt, x, x_img, x_plane, x_row, xr, check_finite,
                        by_rows ? bands : nullptr))
            return false;
        if (L.slack > 0) std::memset(xr + N * img, 0, sizeof(float) * (L.slack + 64));
    }
    pool_run_owned(runs, sp.nt - 1, [&](long run, int slot) {
        for (long it = items * run / runs; it < items * (run + 1) / runs; ++it) {
            const long chunk = it % nchunks;
            const long nt_idx = it / nchunks;
            const long n = nt_idx / ntiles, tile = nt_idx % ntiles;
            if (groups) {
                isa.process_grp(c, n, tile, chunk, bufs[slot]->p);
                continue;
            }
            const long b0 = nblocks * chunk / nchunks, b1 = nblocks * (chunk + 1) / nchunks;
            isa.process(c, n, tile, b0, b1, bufs[slot]->p);
        }
    });
    if (L.split[0].nt != L.split[1].nt)
        L.choice.record(pick, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return true;
}

void spconv_run(const SpconvPlan& plan, const std::string& isa, const ConvArgs& a) {
    spconv_execute(SpconvLayout(&plan, nullptr, isa, a), a, false);
}

void spconv_run_groups(const GroupPlan& plan, const std::string& isa, const ConvArgs& a) {
    spconv_execute(SpconvLayout(nullptr, &plan, isa, a), a, false);
}

void group_check_plan(const GroupPlan& p) {
    auto fail = [](const std::string& m) { throw std::invalid_argument("GroupPlan: " + m); };
    if (p.O <= 0 || p.Ctot <= 0 || p.KH <= 0 || p.KW <= 0 || p.och <= 0) fail("non-positive shape");
    if (p.nchunks != (p.O + p.och - 1) / p.och) fail("nchunks != ceil(O/och)");
    const long KK = (long)p.KH * p.KW;
    if ((long)p.Ctot * KK >= (1L << 31)) fail("Ctot*KH*KW too large");
    const long G = (long)p.grp_ci.size();
    if ((long)p.grp_np.size() != G || (long)p.grp_k.size() != 4 * G ||
        (long)p.grp_ptr.size() != G + 1)
        fail("group arrays disagree in length");
    const long E = (long)p.ch_o.size();
    if ((long)p.ch_w.size() != 4 * E) fail("ch_w length != 4*entries");
    if ((long)p.chunk_ptr.size() != p.nchunks + 1 || p.chunk_ptr[0] != 0 ||
        p.chunk_ptr[p.nchunks] != G)
        fail("chunk_ptr does not cover the groups");
    if (p.grp_ptr[0] != 0 || p.grp_ptr[G] != E) fail("grp_ptr does not cover the entries");
    for (long j = 0; j < p.nchunks; ++j) {
        if (p.chunk_ptr[j + 1] < p.chunk_ptr[j]) fail("chunk_ptr decreasing");
        const long nch = std::min<long>(p.och, p.O - j * p.och);
        for (int64_t g = p.chunk_ptr[j]; g < p.chunk_ptr[j + 1]; ++g) {
            if (p.grp_ci[g] < 0 || p.grp_ci[g] >= p.Ctot) fail("grp_ci out of range");
            if (p.grp_np[g] < 1 || p.grp_np[g] > 4) fail("grp_np not in 1..4");
            for (int q = 0; q < p.grp_np[g]; ++q)
                if (p.grp_k[4 * g + q] < 0 || p.grp_k[4 * g + q] >= KK) fail("grp_k out of range");
            if (p.grp_ptr[g + 1] < p.grp_ptr[g]) fail("grp_ptr decreasing");
            for (int64_t e = p.grp_ptr[g]; e < p.grp_ptr[g + 1]; ++e)
                if (p.ch_o[e] < 0 || p.ch_o[e] >= nch) fail("ch_o outside its chunk");
        }
    }
}

}  // namespace kepsparse
