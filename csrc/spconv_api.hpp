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

// y (N, O, Ho, Wo) = conv(x (N, Ctot, H, W)) with the plan's weights; bias may be null.
// Throws std::runtime_error if the CPU lacks the ISA, std::invalid_argument on bad sizes
// (including a padded input smaller than the dilated kernel, or out_hw that does not match).
// Call without the GIL; threads <= 0: OpenMP default.
void spconv_run(const SpconvPlan& plan, const std::string& isa, const float* x, long N, long H,
                long W, const float* bias, float* y, long Ho, long Wo, int sh, int sw, int pt,
                int pb, int pl, int pr, int dh, int dw, bool relu, int threads);

// The same convolution with a pattern-group plan (see GroupPlan in spconv.hpp).
void group_check_plan(const GroupPlan& plan);
void spconv_run_groups(const GroupPlan& plan, const std::string& isa, const float* x, long N,
                       long H, long W, const float* bias, float* y, long Ho, long Wo, int sh,
                       int sw, int pt, int pb, int pl, int pr, int dh, int dw, bool relu,
                       int threads);

}  // namespace kepsparse
