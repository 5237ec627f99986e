"""Kernel registry: every convolution kernel is registered once, here, with what it is.

A ``Kernel`` says its backend, the formats it runs, dtype, ISA and constraints. Tests and
benchmarks iterate ``all_kernels()``, so registering a kernel gets it tested and measured.

Calling convention (the boundary has already validated everything):
    prepared = kernel.prepare(fmt)          # repack once, through the format class
    y = kernel.run(prepared, x, bias, geometry, relu, threads)
      x: float32 C-contiguous (N, C, H, W); bias: float32 (O,) or None;
      returns float32 (N, O, Ho, Wo).
A kernel with ``fuses_residual`` also takes ``residual=`` (float32 C-contiguous, the output's
shape) and returns act(conv + bias + residual) in one pass (a ResNet block's Conv -> Add ->
Relu); ``conv.run_prepared`` does the add itself for the other kernels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BackendUnavailableError, UnsupportedError

BACKENDS = ("reference", "numba", "cpp")


@dataclass(frozen=True)
class Kernel:
    name: str                      # e.g. "pattern_f32_ref": format, dtype, tile/ISA
    backend: str                   # one of BACKENDS
    formats: tuple[str, ...]       # format names it runs
    prepare: Callable[[Any], Any]
    run: Callable[..., Any]
    dtype: str = "float32"
    isa: str = "any"
    constraints: str = ""          # human-readable limits, e.g. "groups=1"
    supports_groups: bool = True
    available: Callable[[], str | None] = field(default=lambda: None)  # None or why not
    priority: int = 0              # higher wins in "auto"
    fuses_residual: bool = False   # run(..., residual=r) adds r before the activation
    # estimate(prepared, groups) -> relative cost of this layer, comparable between kernels
    # of one backend and ISA (None: cannot say); used by select_for() to pick per layer
    estimate: Callable[[Any, int], float | None] | None = None
    # bind(prepared, x_shape, geometry, threads, bias) -> fn(x, relu, residual): ``run`` for
    # one input shape and bias with everything else worked out once, returning None (and
    # computing nothing) when x holds a NaN/Inf (None: callers use ``run``). Network
    # runtimes call a layer with one shape many times; see conv.bind_prepared.
    bind: Callable[[Any, tuple, Any, int | None, Any], Callable] | None = None

    def unavailable_reason(self) -> str | None:
        return self.available()


_KERNELS: dict[str, Kernel] = {}
# select()'s answers: availability is fixed for a process, and select() sits on every call
_SELECTED: dict[tuple[str, str, int], Kernel] = {}


def register(kernel: Kernel) -> Kernel:
    _SELECTED.clear()
    if kernel.name in _KERNELS:
        raise ValueError(f"kernel {kernel.name!r} registered twice")
    if kernel.backend not in BACKENDS:
        raise ValueError(f"kernel {kernel.name!r}: unknown backend {kernel.backend!r}")
    _KERNELS[kernel.name] = kernel
    return kernel


def _load_backends() -> None:
    # importing the backend modules registers their kernels
    from . import reference  # noqa: F401
    for module in ("numba_kernels", "cpp"):
        try:
            __import__(f"{__package__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{module}":
                raise


def all_kernels(include_unavailable: bool = False) -> list[Kernel]:
    _load_backends()
    ks = sorted(_KERNELS.values(), key=lambda k: k.name)
    return ks if include_unavailable else [k for k in ks if k.unavailable_reason() is None]


def get(name: str) -> Kernel:
    _load_backends()
    if name not in _KERNELS:
        raise UnsupportedError(f"no kernel named {name!r}; known: {', '.join(sorted(_KERNELS))}",
                               field="kernel")
    return _KERNELS[name]


def select(format_name: str, backend: str = "auto", groups: int = 1) -> Kernel:
    """The kernel to run ``format_name`` on ``backend`` (a backend name, a kernel name, or auto)."""
    key = (format_name, backend, groups)
    if key not in _SELECTED:
        _SELECTED[key] = _select(format_name, backend, groups)
    return _SELECTED[key]


def _select(format_name: str, backend: str, groups: int) -> Kernel:
    _load_backends()
    if backend in _KERNELS:
        k = _KERNELS[backend]
        if format_name not in k.formats:
            raise UnsupportedError(f"kernel {k.name!r} does not run the {format_name!r} format "
                                   f"(it runs {', '.join(k.formats)})", field="backend")
        candidates = [k]
    elif backend == "auto":
        candidates = [k for k in _KERNELS.values() if format_name in k.formats]
    elif backend in BACKENDS:
        candidates = [k for k in _KERNELS.values() if k.backend == backend and format_name in k.formats]
        if not candidates:
            raise UnsupportedError(f"backend {backend!r} has no kernel for the {format_name!r} format",
                                   field="backend")
    else:
        raise UnsupportedError(f"unknown backend {backend!r}; choose from auto, "
                               f"{', '.join(BACKENDS)} or a kernel name", field="backend")
    if groups != 1:
        candidates = [k for k in candidates if k.supports_groups] or candidates
    usable = [k for k in candidates if k.unavailable_reason() is None]
    if not usable:
        reasons = "; ".join(f"{k.name}: {k.unavailable_reason()}" for k in candidates)
        raise BackendUnavailableError(f"no usable kernel for format {format_name!r} on backend "
                                      f"{backend!r} ({reasons})", field="backend")
    if groups != 1 and not usable[0].supports_groups:
        raise UnsupportedError(f"kernel {usable[0].name!r} does not support groups={groups}",
                               field="groups")
    return max(usable, key=lambda k: (k.priority, k.name))


def select_for(fmt, backend: str = "auto", groups: int = 1) -> Kernel:
    """``select()`` refined for one layer's weight ``fmt``: when ``backend`` is "auto" or a
    backend name, the chosen kernel's siblings (same backend and ISA, running this format)
    that estimate their cost compete, and the cheapest estimate wins (ties: priority).
    E.g. the KEP pattern-group kernel against register blocks on a layer whose planes share
    few patterns. A kernel name is taken as it is. Cached on the format object."""
    k = select(fmt.name, backend, groups)
    if backend not in ("auto", *BACKENDS) or k.estimate is None:
        return k
    cache = fmt.__dict__.setdefault("_selected_for", {})
    key = (backend, groups)
    if key not in cache:
        from ..conv import prepared_for  # conv imports this module
        best = (None, None)
        for s in sorted(_KERNELS.values(), key=lambda s: (-s.priority, s.name)):
            if (s.backend != k.backend or s.isa != k.isa or fmt.name not in s.formats
                    or s.estimate is None or s.unavailable_reason() is not None
                    or (groups != 1 and not s.supports_groups)):
                continue
            try:
                cost = s.estimate(prepared_for(fmt, s), groups)
            except UnsupportedError:
                cost = None
            if cost is not None and (best[0] is None or cost < best[0]):
                best = (cost, s)
        cache[key] = best[1] or k
    return cache[key]


def backend_status() -> dict[str, str | None]:
    """For each backend: None if at least one kernel is usable, else the reason."""
    _load_backends()
    status: dict[str, str | None] = {}
    for b in BACKENDS:
        ks = [k for k in _KERNELS.values() if k.backend == b]
        if not ks:
            status[b] = "no kernels registered"
        elif any(k.unavailable_reason() is None for k in ks):
            status[b] = None
        else:
            status[b] = ks[0].unavailable_reason()
    return status
