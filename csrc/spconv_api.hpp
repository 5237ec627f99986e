// Entry points of the sparse convolution engine, called from the bindings (module.cpp).
#pragma once

#include <string>

#include "spconv.hpp"

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
};

// Runs the plan's convolution. Throws std::runtime_error if the CPU lacks the ISA,
// std::invalid_argument on bad sizes (including a padded input smaller than the dilated
// kernel, or Ho/Wo that do not match). Call without the GIL.
void spconv_run(const SpconvPlan& plan, const std::string& isa, const ConvArgs& a);

// The same convolution with a pattern-group plan (see GroupPlan in spconv.hpp).
void group_check_plan(const GroupPlan& plan);
void spconv_run_groups(const GroupPlan& plan, const std::string& isa, const ConvArgs& a);

}  // namespace kepsparse
