// Non-sliding-window sparse convolution engine (the "cpp" backend's kernels).
//
// Every stored weight Wt[o, c, kh, kw] scales one shifted (strided) input plane into one
// output plane. Two plan kinds, each built once per layer in kepsparse/kernels/cpp.py
// through the format class:
//   SpconvPlan (any format, from coo()): register blocks of OB output channels; one input
//     vector load feeds OB FMAs when the block's channels share the position.
//   GroupPlan (pattern format, from ids()/patterns/values): per input channel, the planes
//     that use the same library pattern; the pattern's input vectors are loaded into
//     registers once and feed every plane of the group (the KEP structure).
//
// SpconvPlan:
//
//   output channels are permuted (channels with equal kept masks adjacent) and cut into
//   blocks of OB channels (OB in {1,2,4,8}); each block keeps the union of its channels'
//   kept positions as "entries", sorted by (input channel, kernel position):
//     out_ch  int32 [nblocks*OB]        original output channel of every slot, -1 = padding;
//                                       every channel 0..O-1 exactly once (the kernel writes
//                                       y only through out_ch: spconv_check_plan enforces it)
//     ck      int32 [nE]                ci*KH*KW + kh*KW + kw of every entry (ci: absolute
//                                       input channel, groups already resolved)
//     w       float [nE*OB]             the OB weights of every entry (0 where a channel of
//                                       the block does not keep that position)
//     cptr    int64 [nblocks*(ncg+1)]   entry index where block b's entries with
//                                       ci >= 8*g start (ncg = ceil(Ctot/8) channel groups)
//
// At run time the input is repacked once per call into padded, stride-phase-split planes
// (see pack_input in spconv.cpp) so that the input a weight needs for a run of consecutive
// output pixels is one contiguous run of floats: output pixel i (flat over a row pitch Wr)
// of entry (ci, k) reads packed[ci*PS + tab[k] + i]. A register tile is OB output channels x
// V vectors of pixels: one vector load of input feeds OB FMAs.
#pragma once

#include <cstdint>
#include <vector>

namespace kepsparse {

struct SpconvPlan {
    int O = 0, Ctot = 0, KH = 0, KW = 0, OB = 1;
    long nblocks = 0;
    int ncg = 0;  // channel groups of 8
    std::vector<int32_t> out_ch;
    std::vector<int32_t> ck;
    std::vector<float> w;
    std::vector<int64_t> cptr;
};

// The pattern-group plan (KEP structure, `pattern` format only). Output channels are cut
// into chunks of `och`; inside a chunk, the planes of one input channel ci that use the
// same library pattern p form a group (up to 4 of p's positions per group; a pattern with
// more positions gives several groups). A group's input vectors (positions x pixel tile)
// are loaded into registers once and feed every output channel of the group; the
// accumulators of the chunk's channels live in an L1 tile buffer.
//   grp_ci   int32 [G]        absolute input channel of each group
//   grp_k    int32 [G*4]      kernel positions kh*KW+kw of the group (first grp_np valid)
//   grp_np   int32 [G]        positions in the group, 1..4
//   grp_ptr  int64 [G+1]      the group's channel entries [grp_ptr[g], grp_ptr[g+1])
//   ch_o     int32 [E]        output channel of each entry, relative to its chunk
//   ch_w     float [E*4]      its weights at the group's positions (0-padded to 4)
//   chunk_ptr int64 [nchunks+1] groups of chunk j: [chunk_ptr[j], chunk_ptr[j+1])
// Every output channel is written: each chunk's tile buffer starts at zero and all of its
// channels are stored, so a channel no entry names (an empty filter) gets its bias only.
// Unlike SpconvPlan.out_ch, ch_o therefore need not name every channel.
struct GroupPlan {
    int O = 0, Ctot = 0, KH = 0, KW = 0, och = 1;
    long nchunks = 0;
    std::vector<int32_t> grp_ci, grp_k, grp_np, ch_o;
    std::vector<int64_t> grp_ptr, chunk_ptr;
    std::vector<float> ch_w;
};

// Everything one call needs, shared read-only by the threads.
struct SpconvCtx {
    const SpconvPlan* plan = nullptr;
    // the plan's arrays as raw pointers (the ISA code touches no std:: templates)
    const int32_t* out_ch = nullptr;
    const int32_t* ck = nullptr;
    const float* w = nullptr;
    const int64_t* cptr = nullptr;
    int O = 0, OB = 1, ncg = 0;
    // pattern-group plan's arrays (null in block mode)
    const int32_t *g_ci = nullptr, *g_k = nullptr, *g_np = nullptr, *g_cho = nullptr;
    const int64_t *g_ptr = nullptr, *g_chunk_ptr = nullptr;
    const float* g_chw = nullptr;
    long g_och = 1;
    int KK = 1;
    const float* xr = nullptr;     // packed input
    long img_stride = 0;           // floats per image in xr (Ctot * PS)
    const int32_t* off = nullptr;  // [Ctot*KK] offset of entry key in an image of xr
    float* y = nullptr;            // (N, O, Ho, Wo) at strides y_img, y_plane, y_row
    const float* bias = nullptr;   // (O,) or null
    const float* res = nullptr;    // (N, O, Ho, Wo) added before the ReLU, or null
    long y_img = 0, y_plane = 0, y_row = 0;  // strides in floats (ConvArgs)
    long r_img = 0, r_plane = 0, r_row = 0;
    int* y_nonfinite = nullptr;    // set to 1 when a stored y value is NaN/Inf, or null
    bool relu = false;
    long Ho = 0, Wo = 0, Wr = 0;   // output size, row pitch of the flat pixel index
    long npix = 0;                 // Ho * Wr
    int lanes = 16;                // floats per vector
    int vmax = 4;                  // vectors per full tile
    long T = 64;                   // floats per tile = vmax * lanes
    int cgb = 1;                   // channel groups per c-block
};

// One ISA's implementation: tile shape and the work-item function.
struct SpconvIsa {
    const char* name;
    int lanes;
    int (*vmax)(int ob);  // 0 when this ISA has no tile for that OB
    // Compute output pixels [tile*T, tile*T + T) of image n for blocks [b0, b1);
    // buf: scratch of (b1-b0)*OB*T floats.
    void (*process)(const SpconvCtx& c, long n, long tile, long b0, long b1, float* buf);
    int grp_v;  // vectors per tile of the pattern-group kernel
    // Pattern-group plan: pixels of `tile` of image n, output-channel chunk `chunk`;
    // buf: och*T floats.
    void (*process_grp)(const SpconvCtx& c, long n, long tile, long chunk, float* buf);
    // Stride-1 packing of one input plane (layout: pack_input in spconv.cpp): pt zero rows,
    // then per data row [W data][Wr - W zeros], zeros up to PS. Exact stores, no spill.
    // The source plane's rows start src_row floats apart. Both packers return false when a
    // float they copied is NaN/Inf.
    bool (*pack_s1)(const float* src, long src_row, float* dst, long H, long W, long Wr,
                    long pt, long pl, long PS);
    // Column stride 2 (any row stride sh): the 2*sh phase planes of one input plane, then
    // zeros up to PS (layout: pack_input in spconv.cpp). Reads only the plane's H x W data.
    bool (*pack_sw2)(const float* src, long src_row, float* dst, long H, long W, long Wr,
                     long Hra, long sh, long pt, long pl, long PS);
};

const SpconvIsa& spconv_isa_avx512();
const SpconvIsa& spconv_isa_avx2();
const SpconvIsa& spconv_isa_generic();

}  // namespace kepsparse
