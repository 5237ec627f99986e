"""``kepsparse.conv2d``: the public sparse convolution, validating at the boundary."""
from __future__ import annotations

import numpy as np

from .errors import InputError
from .formats import SparseFormat, pack
from .geometry import ConvGeometry
from .kernels import registry


#: Largest input, padded input or output a call may allocate (float32 elements: 8 GiB).
MAX_TENSOR_ELEMENTS = 2**31


def as_input(x, name: str = "x") -> np.ndarray:
    """A float32 C-contiguous 4-D array (a correct copy if needed), or InputError."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # noqa: BLE001 - anything array-like that fails is bad input
            raise InputError(f"cannot be read as an array: {exc}", field=name) from None
    if x.dtype.kind not in "fiu":
        raise InputError(f"must hold real numbers, got dtype {x.dtype}", field=name)
    if x.ndim != 4:
        raise InputError(f"must be 4-D (N, C, H, W), got shape {x.shape}", field=name)
    if 0 in x.shape:
        raise InputError(f"has an empty dimension: shape {x.shape}", field=name)
    if x.size > MAX_TENSOR_ELEMENTS:  # before the float32 copy below allocates it
        raise InputError(f"has {x.size:,} elements, more than {MAX_TENSOR_ELEMENTS:,}", field=name)
    return np.ascontiguousarray(x, dtype=np.float32)


def check_operands(x: np.ndarray, fmt: SparseFormat, bias, geometry: ConvGeometry,
                   layer: str | None = None):
    """Shapes must agree; returns bias as float32 (O,) or None."""
    O, Cg, KH, KW = fmt.shape
    g = geometry.groups
    if O % g:
        raise InputError(f"{O} output channels are not divisible by groups={g}",
                         layer=layer, field="groups")
    if x.shape[1] != Cg * g:
        raise InputError(f"input has {x.shape[1]} channels, the weight expects {Cg * g} "
                         f"({Cg} per group x {g} groups)", layer=layer, field="x")
    Ho, Wo = geometry.output_size(x.shape[2], x.shape[3], KH, KW)  # raises if too small
    pt, pb, pl, pr = geometry.padding
    padded = x.shape[0] * x.shape[1] * (x.shape[2] + pt + pb) * (x.shape[3] + pl + pr)
    out = x.shape[0] * O * Ho * Wo
    if max(padded, out) > MAX_TENSOR_ELEMENTS:  # before any kernel allocates
        raise InputError(f"the padded input ({padded:,} floats) or the output ({out:,} floats) "
                         f"exceeds {MAX_TENSOR_ELEMENTS:,} elements: padding {geometry.padding} "
                         f"on a {x.shape[2]}x{x.shape[3]} input", layer=layer,
                         field="padding" if any(geometry.padding) else "x")
    # the kernels split a strided input into stride phases of ceil(Hp/sh) x ceil(Wp/sw)
    # rows and columns: sh*sw phases, so a stride far beyond the input inflates it
    (sh, sw), Hp, Wp = geometry.stride, x.shape[2] + pt + pb, x.shape[3] + pl + pr
    phased = x.shape[0] * x.shape[1] * (-(-Hp // sh) * sh) * (-(-Wp // sw) * sw)
    if phased > MAX_TENSOR_ELEMENTS:
        raise InputError(f"stride {geometry.stride} on a {Hp}x{Wp} padded input needs a "
                         f"packed input of {phased:,} floats, more than {MAX_TENSOR_ELEMENTS:,}",
                         layer=layer, field="stride")
    if bias is None:
        return None
    b = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
    if b.shape != (O,):
        raise InputError(f"bias has {b.size} entries, the layer has {O} output channels",
                         layer=layer, field="bias")
    return b


def prepared_for(fmt: SparseFormat, kernel: registry.Kernel):
    """The kernel's repacked form of ``fmt``, built once and cached on the format object."""
    cache = fmt.__dict__.setdefault("_prepared", {})
    if kernel.name not in cache:
        cache[kernel.name] = kernel.prepare(fmt)
    return cache[kernel.name]


try:  # the C++ scan (SIMD, no temporary, GIL released) when the extension is built
    from ._core import all_finite as _core_all_finite
except ImportError:
    _core_all_finite = None


def all_finite(x: np.ndarray) -> bool:
    """True when the float32 C-contiguous ``x`` holds no NaN/Inf (one pass over x)."""
    if _core_all_finite is not None:
        return bool(_core_all_finite(x))
    return bool(np.isfinite(x).all())


def check_threads(threads) -> int | None:
    """``threads``: None (the backend's default) or an int >= 1; InputError otherwise."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise InputError(f"must be None or an integer >= 1, got {threads!r}", field="threads")
    return int(threads)


def run_prepared(kernel: registry.Kernel, prepared, fmt: SparseFormat, x: np.ndarray, bias,
                 geometry: ConvGeometry, relu: bool, threads, residual=None) -> np.ndarray:
    """Run an already selected and prepared kernel on validated operands:
    act(conv(x) + bias + residual), act = ReLU if ``relu``; ``residual`` (optional) is a
    float32 C-contiguous array of the output's shape (validated by the caller).

    A sparse kernel skips pruned positions, so a NaN/Inf input under a zero weight would
    vanish; dense convolution propagates it (0 * inf = nan). Inputs that are not all finite
    therefore run with dense semantics (the reference on the dense weight), as torch would.
    Every path that runs a kernel (conv2d, SparseConv, the graph runtime, the torch drop-in)
    comes through here. Kernels without ``fuses_residual`` get the add done here, in the
    same order (conv + bias, then + residual, then the ReLU).
    """
    if not all_finite(x):
        from .formats import DenseFormat
        kernel = registry.get("any_f32_ref")
        prepared = kernel.prepare(DenseFormat(fmt.to_dense()))
    if residual is None:
        return kernel.run(prepared, x, bias, geometry, relu, threads)
    if kernel.fuses_residual:
        return kernel.run(prepared, x, bias, geometry, relu, threads, residual=residual)
    y = kernel.run(prepared, x, bias, geometry, False, threads)
    np.add(y, residual, out=y)
    if relu:
        np.maximum(y, np.float32(0.0), out=y)
    return y


def bind_prepared(kernel: registry.Kernel, prepared, fmt: SparseFormat, x_shape: tuple, bias,
                  geometry: ConvGeometry, threads):
    """``run_prepared`` for inputs of one shape, as a function ``f(x, relu, residual=None)``
    of validated operands of that shape: kernels with ``bind`` work out their call once
    (the network runtime calls each layer with one shape). Same results and the same
    non-finite fallback as ``run_prepared`` (a bound call returns None for a NaN/Inf input)."""
    if kernel.bind is None or not kernel.fuses_residual:
        return lambda x, relu, residual=None: run_prepared(
            kernel, prepared, fmt, x, bias, geometry, relu, threads, residual)
    call = kernel.bind(prepared, tuple(x_shape), geometry, threads, bias)

    def bound(x, relu, residual=None):
        y = call(x, relu, residual)
        if y is None:  # x holds a NaN/Inf: dense semantics (see run_prepared)
            return run_prepared(kernel, prepared, fmt, x, bias, geometry, relu, threads,
                                residual)
        return y
    bound.call = call  # the kernel's own bound call (the graph runtime's C++ steps use it)
    return bound


#: Bound calls (bind_prepared) kept per format object, oldest dropped first: a conv2d called
#: in a loop on one shape skips the per-call set-up, and a bound C++ call scans x for
#: NaN/Inf while packing it instead of in a pass of its own (~7 us of a 100 us layer).
BOUND_PER_FORMAT = 8


def run_conv(fmt: SparseFormat, x: np.ndarray, bias, geometry: ConvGeometry, backend: str,
             relu: bool, threads) -> np.ndarray:
    """Select the kernel for ``fmt`` on ``backend`` and run it on validated operands."""
    kernel = registry.select_for(fmt, backend, geometry.groups)
    threads = check_threads(threads)
    # a bound call holds a copy of the bias: its values are part of the key
    key = (kernel.name, x.shape, geometry, threads, None if bias is None else bias.tobytes())
    cache = fmt.__dict__.setdefault("_bound", {})
    call = cache.get(key)
    if call is None:
        excess = len(cache) + 1 - BOUND_PER_FORMAT
        for old in list(cache)[:max(excess, 0)]:  # the oldest first
            cache.pop(old, None)  # (None: another Python thread may have dropped it)
        call = cache[key] = bind_prepared(kernel, prepared_for(fmt, kernel), fmt, x.shape,
                                          bias, geometry, threads)
    return call(x, relu)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           backend: str = "reference", relu: bool = False, threads: int | None = None) -> np.ndarray:
    """2-D convolution of NCHW float32 ``x`` with a sparse (or dense) ``weight``.

    ``weight``: a format object from ``kepsparse.formats`` or a dense (O, C/groups, KH, KW)
    array (packed with ``format="auto"``). ``padding``: int, (ph, pw), or (top, bottom,
    left, right). ``backend``: "reference", "numba", "cpp", "auto", or a kernel name.
    Returns float32 (N, O, Ho, Wo); equals ``torch.nn.functional.conv2d`` up to rounding.
    """
    fmt = weight if isinstance(weight, SparseFormat) else pack(weight, "auto")
    x = as_input(x)
    geometry = ConvGeometry.make(stride, padding, dilation, groups)
    b = check_operands(x, fmt, bias, geometry)
    return run_conv(fmt, x, b, geometry, backend, relu, threads)
