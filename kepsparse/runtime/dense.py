"""Dense convolution through BLAS (NumPy matmul): the runtime's dense path.

Used for grouped / depthwise convolutions that no registered kernel runs, and as one of
the candidates the per-layer tuner measures against the sparse kernels.

    groups == 1:   im2col (a strided view, copied once) then W (O, C*KH*KW) @ cols;
                   1x1 stride-1 unpadded convs skip im2col.
    depthwise:     shift-and-accumulate over the KH*KW positions, vectorised over channels.
    other groups:  im2col per group.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..blas import one_blas_thread


class DenseConv:
    """A dense conv with its weight pre-reshaped for matmul."""

    name = "numpy_dense_blas"

    def __init__(self, weight: np.ndarray, bias, geometry):
        self.w = np.ascontiguousarray(weight, dtype=np.float32)
        self.O, self.Cg, self.KH, self.KW = self.w.shape
        self.g = geometry.groups
        self.geometry = geometry
        self.bias = None if bias is None else np.asarray(bias, np.float32)
        Og = self.O // self.g
        self.w2 = [np.ascontiguousarray(self.w[i * Og:(i + 1) * Og].reshape(Og, -1))
                   for i in range(self.g)]
        self.depthwise = self.g > 1 and self.Cg == 1

    def __call__(self, x: np.ndarray, relu: bool = False, residual=None) -> np.ndarray:
        """act(conv(x) + bias + residual), residual: None or an array of the output's shape."""
        N, C, H, W = x.shape
        geo = self.geometry
        Ho, Wo = geo.output_size(H, W, self.KH, self.KW)
        pt, pb, pl, pr = geo.padding
        (sh, sw), (dh, dw) = geo.stride, geo.dilation
        if pt or pb or pl or pr:
            x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        if self.depthwise:
            y = self._depthwise(x, Ho, Wo, sh, sw, dh, dw)
        else:
            y = np.empty((N, self.O, Ho * Wo), np.float32)
            Og, Cg = self.O // self.g, self.Cg
            # one BLAS thread: a threaded call leaves a worker spinning (kepsparse/blas.py)
            with one_blas_thread():
                for gi in range(self.g):
                    xg = x[:, gi * Cg:(gi + 1) * Cg]
                    if self.KH == self.KW == 1 and sh == sw == 1:
                        cols = np.ascontiguousarray(xg[:, :, :Ho, :Wo]).reshape(N, Cg, Ho * Wo)
                    else:
                        s = xg.strides
                        view = as_strided(xg, (N, Cg, self.KH, self.KW, Ho, Wo),
                                          (s[0], s[1], s[2] * dh, s[3] * dw, s[2] * sh, s[3] * sw),
                                          writeable=False)
                        cols = view.reshape(N, Cg * self.KH * self.KW, Ho * Wo)
                    np.matmul(self.w2[gi], cols, out=y[:, gi * Og:(gi + 1) * Og])
            y = y.reshape(N, self.O, Ho, Wo)
        if self.bias is not None:
            y += self.bias[None, :, None, None]
        if residual is not None:
            y += residual
        if relu:
            np.maximum(y, 0, out=y)
        return y

    def _depthwise(self, xp, Ho, Wo, sh, sw, dh, dw):
        N, C = xp.shape[:2]
        m = self.O // C  # channel multiplier
        y = np.zeros((N, self.O, Ho, Wo), np.float32)
        src = np.repeat(xp, m, axis=1) if m > 1 else xp
        for i in range(self.KH):
            for j in range(self.KW):
                plane = src[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh,
                            j * dw: j * dw + sw * (Wo - 1) + 1: sw]
                y += self.w[None, :, 0, i, j, None, None] * plane
        return y
