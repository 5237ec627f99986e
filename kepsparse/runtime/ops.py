"""NumPy implementations of the graph's operators (everything but SparseConv).

Each function takes the node's attributes and its input arrays (None for an omitted optional
input) and returns one array, following the ONNX operator's semantics for the forms the
converter lets through (see ``docs/onnx_support.md``). ``reuse`` is True when the first input
is dead after this node and may be overwritten.
"""
from __future__ import annotations

import math

import numpy as np

from ..conv import MAX_TENSOR_ELEMENTS

try:  # the extension is optional (no compiler at install time): NumPy paths otherwise
    from .._core import max_pool2d as _core_max_pool2d
except ImportError:  # pragma: no cover
    _core_max_pool2d = None


def _min_value(dtype):
    return -np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).min


def relu(a, xs, reuse=False):
    x = xs[0]
    if reuse and x.flags.writeable:
        return np.maximum(x, 0, out=x)
    return np.maximum(x, np.zeros((), x.dtype))


def clip(a, xs, reuse=False):
    x = xs[0]
    lo = xs[1] if len(xs) > 1 else None
    hi = xs[2] if len(xs) > 2 else None
    out = x if (reuse and x.flags.writeable) else None
    y = x
    if lo is not None:
        y = np.maximum(y, np.asarray(lo, x.dtype), out=out)
        out = y
    if hi is not None:
        y = np.minimum(y, np.asarray(hi, x.dtype), out=out)
    return y if y is not x else x.copy()


def leaky_relu(a, xs, reuse=False):
    x = xs[0]
    alpha = np.asarray(a.get("alpha", 0.01), x.dtype)
    return np.where(x < 0, x * alpha, x)


def sigmoid(a, xs, reuse=False):
    x = xs[0]
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def batch_norm(a, xs, reuse=False):
    x, scale, b, mean, var = xs
    eps = a.get("epsilon", 1e-5)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    s = (scale / np.sqrt(var + np.asarray(eps, var.dtype))).astype(x.dtype)
    t = (b - mean * s).astype(x.dtype)
    return x * s.reshape(shape) + t.reshape(shape)


def _same_dtype(x, y, fn, reuse):
    out_shape = np.broadcast_shapes(x.shape, y.shape)
    if reuse and x.flags.writeable and x.shape == out_shape and x.dtype == y.dtype:
        return fn(x, y, out=x)
    return fn(x, y)


def add(a, xs, reuse=False):
    return _same_dtype(xs[0], xs[1], np.add, reuse)


def mul(a, xs, reuse=False):
    return _same_dtype(xs[0], xs[1], np.multiply, reuse)


def concat(a, xs, reuse=False):
    return np.concatenate(xs, axis=a.get("axis", 0))


def flatten(a, xs, reuse=False):
    x = xs[0]
    axis = a.get("axis", 1)
    if axis < 0:
        axis += x.ndim
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def reshape(a, xs, reuse=False):
    x, shape = xs[0], [int(v) for v in np.asarray(xs[1]).reshape(-1)]
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return x.reshape(shape)


#: Below this many multiply-adds a 2-D product skips BLAS (see ``product``).
SMALL_PRODUCT = 1 << 21


def is_small_product(A, B) -> bool:
    """A 2-D matrix product of fewer than SMALL_PRODUCT multiply-adds (a classifier at small
    batch)."""
    return A.ndim == 2 and B.ndim == 2 and A.shape[0] * B.size < SMALL_PRODUCT


def product(A, B):
    """A @ B. A small 2-D product runs in NumPy's own loops (einsum), not BLAS: setting the
    BLAS thread limit (kepsparse/blas.py) would cost more than it saves. ~45 us for
    ResNet-18's 512x1000 classifier at batch 1 (BLAS: ~33 us)."""
    if is_small_product(A, B) and A.dtype == B.dtype and A.dtype.kind == "f":
        return np.einsum("ij,jk->ik", A, B, optimize=False)
    return A @ B


def gemm(a, xs, reuse=False):
    A, B = xs[0], xs[1]
    C = xs[2] if len(xs) > 2 else None
    if a.get("transA", 0):
        A = A.T
    if a.get("transB", 0):
        B = B.T
    y = product(A, B)
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    if alpha != 1.0:
        y = y * np.asarray(alpha, y.dtype)
    if C is not None and beta != 0.0:
        y = y + (C if beta == 1.0 else C * np.asarray(beta, C.dtype))
    return y


def matmul(a, xs, reuse=False):
    return product(xs[0], xs[1])  # A @ B is np.matmul: N-D and broadcasting included


def _softmax(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def softmax(a, xs, reuse=False):
    x = xs[0]
    if a.get("legacy", 0):  # opset < 13: coerce to 2-D at axis
        axis = a.get("axis", 1)
        if axis < 0:
            axis += x.ndim
        n = int(np.prod(x.shape[:axis]))
        return _softmax(x.reshape(n, -1), 1).reshape(x.shape)
    return _softmax(x, a.get("axis", -1))


def identity(a, xs, reuse=False):
    return xs[0]


def _ints(v) -> list[int]:
    """A 0-D/1-D integer tensor input (pads, starts, axes, ...) as Python ints."""
    return list(map(int, np.asarray(v).reshape(-1).tolist()))


def _pad_plan(shape, pads, axes):
    """Pad's index work for an input of ``shape``: (crop, out_shape, middle, width). crop:
    the index of the negative pads' cut (None: none); middle: the cropped input's place in
    the output; width: the (before, after) pads np.pad takes for the other modes."""
    r = len(shape)
    axes = list(range(r)) if axes is None else [v % r for v in axes]
    if len(pads) != 2 * len(axes):
        raise ValueError(f"pads has {len(pads)} entries for {len(axes)} axes")
    before, after = [0] * r, [0] * r
    for i, ax in enumerate(axes):
        before[ax], after[ax] = pads[i], pads[i + len(axes)]
    crop = None
    if min(before + after) < 0:  # negative pads crop first
        crop = tuple(slice(max(-b, 0), shape[d] - max(-e, 0))
                     for d, (b, e) in enumerate(zip(before, after)))
        shape = tuple(len(range(*c.indices(d))) for d, c in zip(shape, crop))
    width = [(max(b, 0), max(e, 0)) for b, e in zip(before, after)]
    out_shape = tuple(d + b + e for d, (b, e) in zip(shape, width))
    if math.prod(out_shape) > MAX_TENSOR_ELEMENTS:  # before anything allocates it
        raise ValueError(f"the padded output would have {math.prod(out_shape):,} elements, "
                         f"more than {MAX_TENSOR_ELEMENTS:,} (pads {pads})")
    middle = tuple(slice(b, b + d) for d, (b, _) in zip(shape, width))
    return crop, out_shape, middle, width


def _pad_with(a, x, plan, value):
    crop, out_shape, middle, width = plan
    if crop is not None:
        x = x[crop]
    mode = a.get("mode", "constant")
    if mode == "constant":
        # one fill and one copy into the middle (np.pad's general path took ~40 us on a
        # ResNet-56 shortcut's 16x16 planes); zeros come from calloc, without a fill pass
        if value is None:
            y = np.zeros(out_shape, x.dtype)
        else:  # (a given 0 may be -0.0)
            cv = np.asarray(value).reshape(-1)[0] if np.size(value) else 0
            y = np.full(out_shape, np.asarray(cv).astype(x.dtype), dtype=x.dtype)
        y[middle] = x
        return y
    return np.pad(x, width, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


def _optional(xs, i):
    return xs[i] if len(xs) > i and xs[i] is not None else None


def pad(a, xs, reuse=False):
    axes = _optional(xs, 3)
    plan = _pad_plan(xs[0].shape, _ints(xs[1]), None if axes is None else _ints(axes))
    return _pad_with(a, xs[0], plan, _optional(xs, 2))


def global_average_pool(a, xs, reuse=False):
    x = xs[0]
    axes = tuple(range(2, x.ndim))
    if x.dtype == np.float32 or x.dtype == np.float64:
        # x.mean's own two steps, the same bits without its ~3 us of set-up: the sum, then
        # a division by the count (as mean does it: in place, the count an integer)
        y = np.add.reduce(x, axis=axes, keepdims=True)
        return np.true_divide(y, math.prod(x.shape[2:]), out=y, casting="unsafe")
    return x.mean(axis=axes, keepdims=True).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- pooling

def pool_geometry(a, H, W):
    """((Ho, Wo), (pt, pb, pl, pr) explicit pads, extra bottom/right for ceil/same)."""
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    auto = a.get("auto_pad", "NOTSET")
    ceil_mode = a.get("ceil_mode", 0)
    spans = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    out, pads = [], []
    for n, k, s, (p0, p1) in zip((H, W), spans, (sh, sw),
                                 _pairs(a.get("pads", [0, 0, 0, 0]))):
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-n // s)
            total = max((o - 1) * s + k - n, 0)
            p0 = total // 2 if auto == "SAME_UPPER" else total - total // 2
            p1 = total - p0
        elif auto == "VALID":
            p0 = p1 = 0
            o = -(-(n - k + 1) // s)
        else:
            span = n + p0 + p1 - k
            o = (-(-span // s) if ceil_mode else span // s) + 1
            if ceil_mode and (o - 1) * s >= n + p0:  # last window may not start in the pad
                o -= 1
        if o < 1:
            raise ValueError(f"pooling window {k} is larger than the padded input {n + p0 + p1}")
        out.append(o)
        pads.append((p0, p1))
    return tuple(out), pads, spans


def _pairs(p):
    return [(p[0], p[2]), (p[1], p[3])]


def _windows(xp, a, Ho, Wo):
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    for i in range(kh):
        for j in range(kw):
            yield xp[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh,
                     j * dw: j * dw + sw * (Wo - 1) + 1: sw]


def _padded(x, pads, spans, a, Ho, Wo, value):
    (p0, p1), (q0, q1) = pads
    sh, sw = a.get("strides", [1, 1])
    need_h = (Ho - 1) * sh + spans[0]
    need_w = (Wo - 1) * sw + spans[1]
    eh = max(need_h - (x.shape[2] + p0 + p1), 0)
    ew = max(need_w - (x.shape[3] + q0 + q1), 0)
    if not (p0 or p1 or q0 or q1 or eh or ew):
        return x, (eh, ew)
    xp = np.pad(x, ((0, 0), (0, 0), (p0, p1 + eh), (q0, q1 + ew)), constant_values=value)
    return xp, (eh, ew)


def _separable(xp, a, Ho, Wo, combine, dtype=None):
    """Reduce the pooling windows with ``combine`` (np.maximum / np.add), rows then columns:
    kh + kw passes instead of kh * kw."""
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    tmp = None
    for j in range(kw):
        v = xp[:, :, :, j * dw: j * dw + sw * (Wo - 1) + 1: sw]
        tmp = v.astype(dtype or v.dtype, copy=True) if tmp is None else combine(tmp, v, out=tmp)
    out = None
    for i in range(kh):
        v = tmp[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh, :]
        out = v.copy() if out is None else combine(out, v, out=out)
    return out


def max_pool(a, xs, reuse=False, threads=None):
    x = xs[0]
    (Ho, Wo), pads, spans = pool_geometry(a, x.shape[2], x.shape[3])
    if _core_max_pool2d is not None and x.dtype == np.float32 and x.ndim == 4:
        # the C++ loop: one pass, no padded copy (NumPy's strided passes took 0.8 ms on
        # ResNet-18's 64x112x112 stem output)
        return _core_max_pool2d(np.ascontiguousarray(x), tuple(a["kernel_shape"]),
                                tuple(a.get("strides", [1, 1])), (pads[0][0], pads[1][0]),
                                tuple(a.get("dilations", [1, 1])), (Ho, Wo), threads or 0)
    xp, _ = _padded(x, pads, spans, a, Ho, Wo, _min_value(x.dtype))
    return _separable(xp, a, Ho, Wo, np.maximum)


def average_pool(a, xs, reuse=False):
    x = xs[0]
    H, W = x.shape[2], x.shape[3]
    (Ho, Wo), pads, spans = pool_geometry(a, H, W)
    xp, (eh, ew) = _padded(x, pads, spans, a, Ho, Wo, 0)
    acc = _separable(xp, a, Ho, Wo, np.add,
                     np.float64 if x.dtype == np.float64 else np.float32)
    # divisor: positions inside the input (count_include_pad=0) or inside input + explicit pads
    (p0, p1), (q0, q1) = pads
    ones = np.zeros((1, 1) + xp.shape[2:], np.float64)
    if a.get("count_include_pad", 0):
        ones[..., :H + p0 + p1, :W + q0 + q1] = 1
    else:
        ones[..., p0:p0 + H, q0:q0 + W] = 1
    cnt = sum(v for v in _windows(ones, a, Ho, Wo))
    return (acc / cnt).astype(x.dtype)


def _slice_index(shape, starts, ends, axes, steps):
    """Slice's index of an input of ``shape`` (axes/steps None: the defaults)."""
    r = len(shape)
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError("starts, ends, axes and steps must have the same length")
    index = [slice(None)] * r
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        if not -r <= ax < r:
            raise ValueError(f"axis {ax} out of range for rank {r}")
        ax %= r
        dim = shape[ax]
        if sp == 0:
            raise ValueError("step 0")
        st = st + dim if st < 0 else st
        en = en + dim if en < 0 else en
        if sp > 0:
            st, en = min(max(st, 0), dim), min(max(en, 0), dim)
            index[ax] = slice(st, en, sp)
        else:
            st, en = min(max(st, 0), dim - 1), min(max(en, -1), dim - 1)
            index[ax] = slice(st, None if en < 0 else en, sp)
    return tuple(index)


def _slice_args(xs):
    axes, steps = _optional(xs, 3), _optional(xs, 4)
    return (_ints(xs[1]), _ints(xs[2]), None if axes is None else _ints(axes),
            None if steps is None else _ints(steps))


def slice_(a, xs, reuse=False):
    return xs[0][_slice_index(xs[0].shape, *_slice_args(xs))]


def bind_constant_operands(op: str, a: dict, xs: list):
    """For a Pad or Slice whose operands after x are graph constants (``xs``: x's place
    None, then those constants): the step as a function of x that works out the index
    once per input shape (the ONNX export of a ResNet's shortcut spends more time on that
    than on the copy). None for any other op. Errors are raised at the call, as the
    unbound op raises them."""
    if op == "Slice":
        args, plan = lambda: _slice_args(xs), _slice_index
        run = lambda x, p: x[p]  # noqa: E731
    elif op == "Pad":
        axes = _optional(xs, 3)
        args = lambda: (_ints(xs[1]), None if axes is None else _ints(axes))  # noqa: E731
        plan = _pad_plan
        value = _optional(xs, 2)
        run = lambda x, p: _pad_with(a, x, p, value)  # noqa: E731
    else:
        return None
    plans: dict = {}

    def step(x):
        p = plans.get(x.shape)
        if p is None:
            p = plan(x.shape, *args())
            if len(plans) < 16:  # bounded: a caller may feed many shapes
                plans[x.shape] = p
        return run(x, p)
    return step


FUNCS = {
    "Relu": relu, "Clip": clip, "LeakyRelu": leaky_relu, "Sigmoid": sigmoid,
    "BatchNormalization": batch_norm, "Add": add, "Mul": mul, "Concat": concat,
    "Flatten": flatten, "Reshape": reshape, "Gemm": gemm, "MatMul": matmul,
    "Softmax": softmax, "Identity": identity, "Pad": pad,
    "GlobalAveragePool": global_average_pool, "MaxPool": max_pool,
    "AveragePool": average_pool, "Slice": slice_,
}

#: ops whose first input may be overwritten when dead
INPLACE_OPS = {"Relu", "Clip", "Add", "Mul"}

#: ops whose output may be a view of their first input
VIEW_OPS = {"Identity", "Reshape", "Flatten", "Slice"}
