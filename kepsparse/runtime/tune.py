"""Per-layer kernel choice by measurement.

For every SparseConv layer of a ``GraphModel``, every usable registered kernel that runs the
layer's format (on its sparse weight) or the dense format (on a dense copy), and the BLAS
dense path, are timed on the layer's real input (captured by running the network once on a
random input of the given shape). A candidate whose output disagrees with the BLAS dense
path is discarded. The fastest wins; the choice goes into
``model.metadata["kernel_choice"]``, which ``kepsparse.save`` writes into the .kep file
(``kepsparse tune model.kep`` rewrites the file atomically) and ``backend="auto"`` uses.
"""
from __future__ import annotations

import time

import numpy as np

from ..errors import InputError
from ..kernels import registry
from .engine import DENSE_IMPL, ConvImpl


def candidates(layer, threads: int | None = 1) -> list[dict]:
    """What ``tune`` times for ``layer``.

    With more than one thread, only kernels of the default kernel's backend compete, and the
    BLAS path only where no such kernel runs the layer: every other backend brings its own
    thread pool, whose workers keep spinning after a call and steal the two cores from the
    next layer. Timed alone each layer may prefer another backend; in the network the mix is
    slower (ResNet-18, 85 %, 2 threads: 15.6 ms tuned across numba + C++ + BLAS vs 10.5 ms
    C++ only)."""
    from .engine import default_choice
    groups = layer.geometry.groups if layer.geometry else 1
    one_pool = threads is None or threads > 1
    default = default_choice(layer, "auto")
    pool = registry.get(default["kernel"]).backend if default.get("impl") == "kernel" else None
    out = []
    for k in registry.all_kernels():
        if k.backend == "reference" or (groups != 1 and not k.supports_groups):
            continue
        if one_pool and pool is not None and k.backend != pool:
            continue
        if layer.weight.name in k.formats:
            out.append({"impl": "kernel", "kernel": k.name, "weight": "sparse"})
        if layer.weight.name != "dense" and "dense" in k.formats:
            out.append({"impl": "kernel", "kernel": k.name, "weight": "dense"})
    if not (one_pool and out):
        out.insert(0, {"impl": DENSE_IMPL})
    return out


def sample_input(model, input_shape=None, batch: int = 1, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in model.graph.inputs:
        shape = input_shape if (input_shape is not None and len(model.graph.inputs) == 1) \
            else spec.get("shape")
        if shape is None or any(d is None for d in list(shape)[1:]):
            raise InputError("the model's input shape is not fully known: pass input_shape "
                             "(--input-shape)", field=spec["name"])
        shape = [batch if i == 0 and (d is None or input_shape is None) else d
                 for i, d in enumerate(shape)]
        feeds[spec["name"]] = rng.standard_normal(shape).astype(spec["dtype"])
    return feeds


def tune(model, input_shape=None, batch: int = 1, threads: int | None = None,
         repeats: int = 5, budget_s: float = 0.3, margin: float = 0.1, verbose=None) -> dict:
    """Measure and record the fastest implementation of every conv layer; returns the
    ``kernel_choice`` record (also stored in ``model.metadata``).

    Candidates are timed round-robin (one call each per round, ``repeats`` rounds or until
    ``budget_s`` per layer), and each keeps its fastest call: on a shared, noisy machine the
    minimum is the stable estimate of a kernel's own cost. The registry's default kernel is
    kept unless another is faster by more than ``margin`` (fewer thread pools in one run).

    No thread count is pinned per layer: the C++ engine gives a call as many threads as its
    work pays for, at every batch size (a pin measured at batch 1 kept ResNet-18's layers on
    one thread at batch 8: 87 instead of ~55 ms). Pins in files tuned before are honoured.
    """
    from .engine import default_choice
    feeds = sample_input(model, input_shape, batch)
    captured: dict = {}
    model(feeds, backend="dense", threads=threads, capture=captured)
    layers, timings = {}, {}
    for name, x in captured.items():
        layer = model.layers[name]
        ref = ConvImpl(layer, {"impl": DENSE_IMPL}, threads)(x)
        scale = float(np.abs(ref).max()) + 1e-6
        row, impls = {}, []
        for choice in candidates(layer, threads):
            try:
                impl = ConvImpl(layer, choice, threads)
                y = impl(x)
            except Exception as exc:  # noqa: BLE001 - a kernel that fails is not chosen
                row[_label(choice)] = f"failed: {type(exc).__name__}"
                continue
            if y.shape != ref.shape or float(np.abs(y - ref).max()) > 1e-4 * scale + 1e-5:
                row[_label(choice)] = "wrong result: discarded"
                continue
            impls.append((choice, impl))
        best_t = _race(impls, x, repeats, budget_s)
        row.update({k: round(v * 1e3, 4) for k, v in best_t.items()})
        best, t_best = min(((c, best_t[_label(c)]) for c, _ in impls), key=lambda ct: ct[1])
        default = default_choice(layer, "auto")
        t_default = best_t.get(_label(default), np.inf)
        if t_default <= (1 + margin) * t_best:
            best, t_best = default, t_default
        layers[name] = {**best, "ms": round(t_best * 1e3, 4)}
        timings[name] = row
        if verbose:
            verbose(name, layers[name], row)
    record = {"threads": threads, "batch": batch,
              "input_shape": {k: list(v.shape) for k, v in feeds.items()},
              "layers": layers, "timings": timings}
    model.metadata["kernel_choice"] = record
    model._forget_impls()
    return record


def _race(impls, x, repeats, budget_s) -> dict:
    """Round-robin timing (one call of each per round); each keeps its fastest call."""
    best_t = {_label(c): np.inf for c, _ in impls}
    t_end = time.perf_counter() + budget_s
    for r in range(max(repeats, 1)):
        for choice, impl in impls:
            t0 = time.perf_counter()
            impl(x)
            dt = time.perf_counter() - t0
            best_t[_label(choice)] = min(best_t[_label(choice)], dt)
        if r >= 1 and time.perf_counter() > t_end:
            break
    return best_t


def _label(choice: dict) -> str:
    if choice["impl"] == DENSE_IMPL:
        return DENSE_IMPL
    t = f"@{choice['threads']}t" if "threads" in choice else ""
    return f"{choice['kernel']}[{choice['weight']}]{t}"
