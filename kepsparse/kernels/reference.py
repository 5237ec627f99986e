"""The reference backend: the executable specification of the sparse convolution.

    Xp = pad(X, padding)
    for every stored weight Wt[o, c, kh, kw] = w (input channel ci of o's group):
        Y[:, o] += w * Xp[:, ci, kh*dh : kh*dh + sh*Ho : sh, kw*dw : kw*dw + sw*Wo : sw]

Plain NumPy, float64 accumulation. Entries sharing one shifted input plane (same ci, kh, kw)
are applied together, which changes nothing but the speed. Every other backend is checked
against this one, and this one against torch.nn.functional.conv2d.
"""
from __future__ import annotations

import numpy as np

from .registry import Kernel, register
from ..formats import FORMATS


def prepare(fmt):
    """Entries grouped by shifted input plane: (plane keys, group starts, o, value)."""
    O, Cg, KH, KW = fmt.shape
    o, c, kh, kw, v = fmt.coo()
    return {"shape": fmt.shape, "coo": (np.asarray(o, np.int64), np.asarray(c, np.int64),
                                        np.asarray(kh, np.int64), np.asarray(kw, np.int64),
                                        np.asarray(v, np.float64))}


def run(prepared, x, bias, geometry, relu=False, threads=None):
    O, Cg, KH, KW = prepared["shape"]
    o, c, kh, kw, v = prepared["coo"]
    N, C, H, W = x.shape
    Ho, Wo = geometry.output_size(H, W, KH, KW)
    pt, pb, pl, pr = geometry.padding
    (sh, sw), (dh, dw) = geometry.stride, geometry.dilation
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ci = (o // (O // geometry.groups)) * Cg + c  # input channel of each entry
    y = np.zeros((N, O, Ho, Wo), dtype=np.float64)
    key = (ci * KH + kh) * KW + kw
    order = np.argsort(key, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(key[order]) != 0]) if len(order) else []
    bounds = list(starts) + [len(order)]
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf inputs propagate, as in IEEE
        for b0, b1 in zip(bounds[:-1], bounds[1:]):
            idx = order[b0:b1]
            i = idx[0]
            r0, c0 = kh[i] * dh, kw[i] * dw
            plane = xp[:, ci[i], r0:r0 + sh * (Ho - 1) + 1:sh, c0:c0 + sw * (Wo - 1) + 1:sw]
            y[:, o[idx]] += v[idx, None, None] * plane[:, None].astype(np.float64)
    if bias is not None:
        y += np.asarray(bias, np.float64)[None, :, None, None]
    if relu:
        np.maximum(y, 0.0, out=y)
    return y.astype(np.float32)


register(Kernel(name="any_f32_ref", backend="reference", formats=tuple(FORMATS), prepare=prepare,
                run=run, isa="numpy", constraints="none: the specification", priority=-100))
