"""The integer golden model of a sparse conv layer: the definition the HLS C++ and the RTL
must reproduce bit for bit.

Quantization (all scales are float64, computed once in Python):

    weights      int8, symmetric, per output channel o:
                     w_scale[o] = max|W[o]| / 127   (1.0 for an all-zero filter)
                     wq = clip(rint(W / w_scale[o]), -127, 127)
                 Weights that quantize to 0 are dropped (they cost no cycles in hardware).
    activations  int8, symmetric, one scale per tensor, calibrated on sample inputs:
                     x_scale = max|X_cal| / 127;  xq = clip(rint(X / x_scale), -127, 127)
                 Padding is 0 in the integer domain too (zero point 0).
    bias         int32:  bias_q[o] = rint(b[o] / (x_scale * w_scale[o]))
    accumulator  int32:  acc[o, y, x] = bias_q[o] + sum over non-zeros of wq * xq.
                 The generator proves |acc| < 2**31 for every channel (127*127*nnz_o + |bias_q|).
    output       int8, symmetric, y_scale = max|Y_cal| / 127 of the float layer on the
                 calibration inputs (after ReLU when ReLU is fused).
    requantize   real multiplier m[o] = x_scale * w_scale[o] / y_scale, written as an int32
                 mantissa M[o] in [2**30, 2**31) and a right shift n[o] in [1, 62]:
                     m[o] ~= M[o] * 2**-n[o]
                     y = (int64(acc) * M[o] + 2**(n[o]-1)) >> n[o]    # arithmetic shift:
                                                                     # round half up (to +inf)
                     y = clip(y, 0 if relu else -128, 127)           # saturation (+ fused ReLU)

Every intermediate fits: |acc * M| < 2**62, so the rounding add cannot overflow int64.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, UnsupportedError
from ..formats import PatternFormat, SparseFormat
from ..geometry import ConvGeometry
from ..kernels import reference

QMAX = 127           # int8 symmetric range used for weights and activations
ACC_LIMIT = 2**31    # int32 accumulator
MANTISSA_BITS = 31   # M in [2**30, 2**31)
MAX_SHIFT = 62


def symmetric_scale(max_abs: float) -> float:
    """The int8 scale that maps ``max_abs`` to 127 (1.0 when everything is 0)."""
    max_abs = float(max_abs)
    return max_abs / QMAX if max_abs > 0 else 1.0


def quantize_multiplier(m: float) -> tuple[int, int]:
    """(M, n) with M in [2**30, 2**31) (or smaller when n saturates at 62) and m ~= M * 2**-n."""
    if not np.isfinite(m) or m <= 0:
        raise UnsupportedError(f"requantization multiplier {m!r} must be a positive finite number",
                               field="scales")
    f, e = np.frexp(m)  # m = f * 2**e, f in [0.5, 1)
    M = int(round(float(f) * (1 << MANTISSA_BITS)))
    if M == 1 << MANTISSA_BITS:
        M //= 2
        e += 1
    n = MANTISSA_BITS - int(e)
    if n < 1:
        raise UnsupportedError(f"requantization multiplier {m:.3g} >= 2**30 is out of range "
                               "(output scale far smaller than input x weight scale)", field="scales")
    if n > MAX_SHIFT:  # tiny multiplier: give up mantissa bits to keep the shift in range
        M >>= n - MAX_SHIFT
        n = MAX_SHIFT
    return M, n


def quantize_activations(x, scale: float) -> np.ndarray:
    """float -> int8 with the per-tensor ``scale`` (rint, saturate at +-127)."""
    return np.clip(np.rint(np.asarray(x, np.float64) / scale), -QMAX, QMAX).astype(np.int8)


def requantize(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray, relu: bool) -> np.ndarray:
    """int32 accumulators (N, O, Ho, Wo) -> int8 outputs: the rounding and saturation rule."""
    m = np.asarray(mult, np.int64)[None, :, None, None]
    n = np.asarray(shift, np.int64)[None, :, None, None]
    prod = acc.astype(np.int64) * m
    r = (prod + np.left_shift(np.int64(1), n - 1)) >> n
    return np.clip(r, 0 if relu else -128, 127).astype(np.int8)


@dataclass
class QuantLayer:
    """One conv layer quantized for the accelerator. ``weight`` is the PatternFormat (KEP's
    layout) of the int8 weights stored as float32, so the ROMs come from the format class."""
    name: str
    weight: PatternFormat            # values are the int8 weights (exact in float32)
    geometry: ConvGeometry
    input_shape: tuple[int, int, int]  # (C, H, W)
    w_scale: np.ndarray              # float64 (O,)
    x_scale: float
    y_scale: float
    bias_q: np.ndarray               # int32 (O,)
    mult: np.ndarray                 # int32 (O,)
    shift: np.ndarray                # int32 (O,)
    relu: bool
    float_weight: np.ndarray = field(repr=False, default=None)  # (O, C, KH, KW) float32
    float_bias: np.ndarray | None = field(repr=False, default=None)

    @property
    def shape(self):
        return self.weight.shape

    @property
    def output_hw(self) -> tuple[int, int]:
        _, H, W = self.input_shape
        return self.geometry.output_size(H, W, *self.weight.shape[2:])

    def nnz_per_filter(self) -> np.ndarray:
        return self.weight.kept_mask().reshape(self.shape[0], -1).sum(axis=1).astype(np.int64)

    def int_weight(self) -> np.ndarray:
        """Dense int8 (O, C, KH, KW)."""
        return self.weight.to_dense().astype(np.int8)

    def quantize_input(self, x) -> np.ndarray:
        return quantize_activations(x, self.x_scale)

    def accumulate(self, xq: np.ndarray) -> np.ndarray:
        """int32 accumulators (N, O, Ho, Wo) for int8 input (N, C, H, W): the integer conv."""
        xq = np.asarray(xq)
        if xq.ndim == 3:
            xq = xq[None]
        if xq.dtype != np.int8 or tuple(xq.shape[1:]) != tuple(self.input_shape):
            raise InputError(f"expected int8 input (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {xq.dtype} {xq.shape}", layer=self.name, field="x")
        O, C, KH, KW = self.shape
        Ho, Wo = self.output_hw
        pt, pb, pl, pr = self.geometry.padding
        sh, sw = self.geometry.stride
        xp = np.pad(xq.astype(np.int64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        acc = np.zeros((xq.shape[0], O, Ho, Wo), np.int64)
        acc += self.bias_q.astype(np.int64)[None, :, None, None]
        o, c, kh, kw, v = self.weight.coo()
        for oi, ci, hi, wi, vi in zip(o, c, kh, kw, v.astype(np.int64)):
            acc[:, oi] += vi * xp[:, ci, hi:hi + sh * (Ho - 1) + 1:sh, wi:wi + sw * (Wo - 1) + 1:sw]
        if np.abs(acc).max(initial=0) >= ACC_LIMIT:  # cannot happen: checked at quantization
            raise AssertionError("int32 accumulator overflow")
        return acc.astype(np.int32)

    def run(self, xq: np.ndarray) -> np.ndarray:
        """The golden model: int8 input (N, C, H, W) -> int8 output (N, O, Ho, Wo)."""
        return requantize(self.accumulate(xq), self.mult, self.shift, self.relu)

    def dequantize(self, yq: np.ndarray) -> np.ndarray:
        return yq.astype(np.float64) * self.y_scale

    def float_forward(self, x) -> np.ndarray:
        """The float layer (reference backend) the quantization approximates."""
        fmt = _dense_as_format(self.float_weight)
        x = np.ascontiguousarray(x, np.float32)
        return reference.run(reference.prepare(fmt), x, self.float_bias, self.geometry,
                             relu=self.relu)

    def error_bound(self, x) -> np.ndarray:
        """A per-output bound (N, O, Ho, Wo) on |dequantized golden - float| for input ``x``:
        weight and input rounding propagated through the sum, bias rounding, output rounding.
        Saturation is excluded (the calibration data sets the output range)."""
        x = np.asarray(x, np.float64)
        wabs = np.abs(self.float_weight).astype(np.float64)
        ones_w = (self.float_weight != 0).astype(np.float64)
        fmt_abs = _dense_as_format(wabs.astype(np.float32))
        fmt_ones = _dense_as_format(ones_w.astype(np.float32))
        geom = self.geometry
        ax = np.abs(x).astype(np.float32)
        ones_x = np.ones_like(ax)
        sx = self.x_scale
        sw = self.w_scale[None, :, None, None]
        # |w x - wq sw xq sx| <= |w| sx/2 + |x| sw/2 + sw sx / 4 per product
        term_w = reference.run(reference.prepare(fmt_abs), ones_x, None, geom) * (sx / 2)
        term_x = reference.run(reference.prepare(fmt_ones), ax, None, geom) * (sw / 2)
        term_xx = reference.run(reference.prepare(fmt_ones), ones_x, None, geom) * (sw * sx / 4)
        bias_err = (sx * self.w_scale / 2)[None, :, None, None]
        out_err = self.y_scale / 2
        # the requantization multiplier's relative error (< 2**-30) is negligible but counted
        return term_w + term_x + term_xx + bias_err + out_err + 1e-6 * self.y_scale

    def error_report(self, x) -> dict:
        """Error of the integer model against the float layer on float input ``x``."""
        x = np.asarray(x, np.float32)
        y_float = self.float_forward(x).astype(np.float64)
        y_int = self.dequantize(self.run(self.quantize_input(x)))
        err = np.abs(y_int - y_float)
        bound = self.error_bound(x)
        span = float(np.abs(y_float).max()) or 1.0
        signal = float(np.mean(y_float ** 2))
        noise = float(np.mean((y_int - y_float) ** 2))
        return {"max_abs_error": float(err.max()), "mean_abs_error": float(err.mean()),
                "max_error_over_range": float(err.max()) / span,
                "snr_db": float(10 * np.log10(signal / noise)) if noise > 0 else float("inf"),
                "within_bound": bool(np.all(err <= bound)),
                "max_error_over_bound": float((err / bound).max()),
                "y_scale": self.y_scale, "x_scale": self.x_scale}


def _dense_as_format(w: np.ndarray) -> SparseFormat:
    from ..formats import DenseFormat
    return DenseFormat.from_dense(np.asarray(w, np.float32))


def check_supported(geometry: ConvGeometry, layer: str | None = None) -> None:
    """The accelerator handles groups=1, dilation=1, any stride and padding."""
    if geometry.groups != 1:
        raise UnsupportedError(f"groups={geometry.groups} is not supported by the FPGA engine "
                               "(only groups=1); export a layer with groups=1", layer=layer,
                               field="groups")
    if tuple(geometry.dilation) != (1, 1):
        raise UnsupportedError(f"dilation={tuple(geometry.dilation)} is not supported by the FPGA "
                               "engine (only dilation=1); export a layer without dilation",
                               layer=layer, field="dilation")


def quantize_layer(name: str, weight: SparseFormat, bias, geometry: ConvGeometry,
                   calibration, relu: bool = False) -> QuantLayer:
    """Quantize one layer. ``calibration``: float inputs (N, C, H, W) that set x/y scales;
    the input size (H, W) of the hardware is theirs."""
    check_supported(geometry, name)
    x = np.asarray(calibration)
    if x.ndim == 3:
        x = x[None]
    O, C, KH, KW = weight.shape
    if x.ndim != 4 or x.shape[1] != C or 0 in x.shape:
        raise InputError(f"calibration data must be (N, {C}, H, W) float, got shape {x.shape}",
                         layer=name, field="calibration")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise InputError("calibration data must be finite real numbers", layer=name,
                         field="calibration")
    x = np.ascontiguousarray(x, np.float32)
    geometry.output_size(x.shape[2], x.shape[3], KH, KW)  # raises if the input is too small
    w = weight.to_dense()
    b = None if bias is None else np.asarray(bias, np.float32).reshape(O)

    w_scale = np.array([symmetric_scale(np.abs(w[o]).max()) for o in range(O)], np.float64)
    wq = np.clip(np.rint(w / w_scale[:, None, None, None]), -QMAX, QMAX).astype(np.int8)
    x_scale = symmetric_scale(np.abs(x).max())
    y_float = reference.run(reference.prepare(_dense_as_format(w)), x, b, geometry, relu=relu)
    y_scale = symmetric_scale(np.abs(y_float).max())

    if b is None:
        bias_q = np.zeros(O, np.int64)
    else:
        bias_q = np.rint(b.astype(np.float64) / (x_scale * w_scale)).astype(np.int64)
    nnz = (wq != 0).reshape(O, -1).sum(axis=1).astype(np.int64)
    worst = QMAX * QMAX * nnz + np.abs(bias_q)
    if np.any(worst >= ACC_LIMIT):
        o = int(np.argmax(worst))
        raise UnsupportedError(f"filter {o} could overflow the int32 accumulator ({nnz[o]} "
                               "non-zeros, bias)", layer=name, field="bias")
    mults, shifts = zip(*(quantize_multiplier(x_scale * w_scale[o] / y_scale) for o in range(O)))
    # KEP's pattern layout of the int8 weights: the format class is the only packer.
    fmt = PatternFormat.from_dense(wq.astype(np.float32), mask=wq != 0)
    return QuantLayer(name=name, weight=fmt, geometry=geometry, input_shape=tuple(x.shape[1:]),
                      w_scale=w_scale, x_scale=float(x_scale), y_scale=float(y_scale),
                      bias_q=bias_q.astype(np.int32), mult=np.array(mults, np.int32),
                      shift=np.array(shifts, np.int32), relu=bool(relu),
                      float_weight=w, float_bias=b)
