// Entry points of the sparse convolution engine, called from the bindings (module.cpp,
// runner.cpp).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "spconv.hpp"
#include "workpool.hpp"

namespace kepsparse {

// Throws std::invalid_argument naming the first broken invariant of a plan (including an
// output channel missing from, or listed twice in, out_ch).
void spconv_check_plan(const SpconvPlan& plan);

// Vectors per full tile of this ISA for OB output channels (0: no such tile).
int spconv_tile_vectors(const std::string& isa, int ob);

// One call's operands and geometry. Shapes: x (N, Ctot, H, W); y and residual
// (N, O, Ho, Wo); bias (O,). bias and residual may be null.
//   y = act(conv(x) + bias + residual), act = ReLU if relu else identity,
// summed in that order (the order of an unfused Conv -> Add -> Relu).
struct ConvArgs {
    const float* x = nullptr;
    long N = 0, H = 0, W = 0;
    const float* bias = nullptr;
    const float* residual = nullptr;
    float* y = nullptr;
    long Ho = 0, Wo = 0;
    int sh = 1, sw = 1, pt = 0, pb = 0, pl = 0, pr = 0, dh = 1, dw = 1;
    bool relu = false;
    int threads = 0;  // <= 0: OpenMP default
    // Strides in floats (image, plane, row; a row's floats are contiguous) of x, y and
    // residual, each pointer at its tensor's first data float. 0: the contiguous NCHW value.
    // A y with wider strides is written at its data positions only (see x_packed).
    long x_img = 0, x_plane = 0, x_row = 0;
    long y_img = 0, y_plane = 0, y_row = 0;
    long r_img = 0, r_plane = 0, r_row = 0;
    // x already is this layout's packed input (SpconvLayout::packed_input): its data sits
    // in planes of PS floats at row pitch Wr, x = plane start + data_offset(), zeros around
    // the data and at least slack + 64 zero floats after the last plane. Packing is skipped,
    // and so is the NaN/Inf check: the caller knows x is finite (y_nonfinite of the call that
    // wrote it).
    bool x_packed = false;
    // When not null, set to 1 if a value written to y is NaN/Inf (never cleared here).
    int* y_nonfinite = nullptr;
};

// A call's set-up that depends on sizes only (plan, ISA, N/H/W, Ho/Wo, stride, padding,
// dilation, threads; never the data): the geometry checks, the packed-input layout, the
// input offset of every (ci, k), tiling, c-blocking and the thread count. Built once per
// input shape and reused by every call of that shape (SpconvCall, runner.cpp), so a call
// does only the packing and the kernel. Points into the plan: the plan must outlive it.
// Throws like spconv_run on bad sizes.
struct SpconvLayout {
    SpconvLayout(const SpconvPlan* bp, const GroupPlan* gp, const std::string& isa,
                 const ConvArgs& sizes);
    SpconvLayout(const SpconvLayout&) = delete;
    SpconvLayout& operator=(const SpconvLayout&) = delete;

    const SpconvIsa* isa = nullptr;
    const GroupPlan* gp = nullptr;   // the group plan, or null: a block plan (ctx.plan)
    SpconvCtx ctx;                   // sizes and plan arrays; per-call pointers unset
    std::vector<int32_t> off;        // [Ctot*KK] input offset of entry key (ctx.off)
    long N = 0, C = 0, H = 0, W = 0;
    int sh = 1, sw = 1, pt = 0, pl = 0;
    long Hra = 0, nph = 1, PS = 0;   // packed layout (pack_input in spconv.cpp)
    long slack = 0;                  // zero floats after the last packed image
    bool vector_pack = false;        // the packers check NaN/Inf as they copy (sw 1 or 2)
    // How the work is split, for the default thread count (split[0]) and for the count a
    // 10x lower work threshold gives (split[1]); equal when that makes no difference.
    // A call runs the one `choice` picks (ThreadChoice, workpool.hpp).
    struct Split {
        int nt = 1;                  // threads
        long nchunks = 1, items = 0; // output-channel chunks; work items (N*ntiles*nchunks)
    };
    Split split[2];
    mutable ThreadChoice choice;
    // Whether an input may come already packed (ConvArgs::x_packed): one phase plane
    // (stride 1), so a producer can write its output straight into this layout.
    bool packed_input() const { return nph == 1; }
    // Offset of data (0, 0) in a packed plane, and the floats a packed input buffer needs.
    long data_offset() const { return (long)pt * ctx.Wr + pl; }
    long packed_floats() const { return N * C * PS + slack + 64; }
    long ntiles = 0, nblocks = 0;
    std::size_t buf_floats = 0;      // tile buffer per thread (either split)
};

// Runs a's convolution with a layout built for a's sizes (x's N/H/W are checked against
// it; the other sizes are the caller's to keep). check_finite: return false, with y
// untouched, when x holds a NaN/Inf the kernel would read (the caller then runs dense
// semantics); the input packers check as they copy, so this costs almost nothing.
// Call without the GIL.
bool spconv_execute(const SpconvLayout& layout, const ConvArgs& a, bool check_finite);

// Runs the plan's convolution. Throws std::runtime_error if the CPU lacks the ISA,
// std::invalid_argument on bad sizes (including a padded input smaller than the dilated
// kernel, or Ho/Wo that do not match). Call without the GIL.
void spconv_run(const SpconvPlan& plan, const std::string& isa, const ConvArgs& a);

// The same convolution with a pattern-group plan (see GroupPlan in spconv.hpp).
void group_check_plan(const GroupPlan& plan);
void spconv_run_groups(const GroupPlan& plan, const std::string& isa, const ConvArgs& a);

}  // namespace kepsparse
