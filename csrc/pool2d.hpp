// 2-D max pooling of float32 NCHW planes (the graph runtime's MaxPool; see
// kepsparse/runtime/ops.py for the geometry, computed there).
#pragma once

namespace kepsparse {

// y (N*C planes of Ho x Wo) = max over the kh x kw window (dilation dh, dw) at stride
// (sh, sw) of x (N*C planes of H x W), where window position (i, j) of output (oh, ow)
// reads x[oh*sh - pt + i*dh][ow*sw - pl + j*dw]; positions outside x are ignored (padding,
// ceil_mode). A NaN in a window gives NaN (as np.maximum / torch). A window with no input
// position gives -inf. Up to `threads` threads of the work pool (<= 0: the default count),
// one per work_per_thread() window taps, each pool a band of output rows of every plane.
// Call without the GIL.
void max_pool2d_f32(const float* x, long planes, long H, long W, float* y, long Ho, long Wo,
                    int kh, int kw, int sh, int sw, int pt, int pl, int dh, int dw, int threads);

}  // namespace kepsparse
