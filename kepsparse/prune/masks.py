"""KEP's prior-knowledge masks, chosen from trained weights with NumPy only (no torch).

Zhang, Zhao, Tian, Duan, "Intermediate-grained kernel elements pruning with structured
sparsity", Neural Networks 180 (2024) 106708, doi:10.1016/j.neunet.2024.106708.
Only the abstract is public: this is kepsparse's *reconstruction* of the method (see
/work/shared/METHODS.md §1), not the authors' code.

A mask keeps kernel elements (positions (kh, kw) of kernel planes). The *sharing scope* fixes
which elements must be kept or pruned together (the unit):

``plane``   (PatDNN-style) every kernel plane (o, c) keeps the k positions of one pattern
            from a per-layer library of at most P patterns, or is empty. The library is
            initialised with the P most frequent top-k position sets of the planes and refined
            by Lloyd iterations (each pattern becomes the top-k positions of the summed
            importance of the planes assigned to it); each plane takes the library pattern that
            keeps the most of its norm; the weakest planes are emptied to meet the rate.
``filter``  every filter o keeps a set of positions shared by all its planes ("stripes",
            Meng et al., NeurIPS 2020): the unit is (o, kh, kw) over all input channels.
``layer``   the whole layer keeps one set of positions: the unit is (kh, kw) over all (o, c).

Importance of a unit: its L1 or L2 norm (``metric``). Constraint set of a layer: masks of the
scope's form keeping at most ``floor((1 - p) * weights)`` elements (never fewer than one unit:
a layer is never cut off). Target rates are per layer (one rate or a dict name -> rate) or
global (``global_target=True``: one budget over all layers, units ranked across layers by their
per-element norm - mean |w| for L1, RMS for L2 - so differently sized units compare fairly).
``keep_center`` makes every kept plane (plane scope) / every filter (filter scope) / the layer
(layer scope) keep the kernel centre ``((KH-1)//2, (KW-1)//2)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil, floor

import numpy as np

from ..errors import InputError

SCOPES = ("plane", "filter", "layer")
METRICS = ("l1", "l2")
#: PatDNN keeps 4 of 9 positions of a 3x3 plane; ``auto`` scales that to other kernel sizes.
DEFAULT_KEEP_FRACTION = 4 / 9


@dataclass
class LayerMask:
    """The chosen mask of one layer and how it was built."""
    mask: np.ndarray                     # bool (O, C, KH, KW)
    scope: str
    target_sparsity: float               # the rate asked for this layer
    library: np.ndarray | None = None    # bool (P', KH, KW), plane scope: the patterns used
    usage: np.ndarray | None = None      # int (P',): planes using each library pattern
    keep_per_pattern: int | None = None  # k, plane scope
    info: dict = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        return 1.0 - float(self.mask.sum()) / self.mask.size

    @property
    def empty_planes(self) -> int:
        return int((~self.mask.any(axis=(2, 3))).sum())

    def to_json(self) -> dict:
        out = {"scope": self.scope, "target_sparsity": round(float(self.target_sparsity), 6),
               "sparsity": round(self.sparsity, 6), "kept": int(self.mask.sum()),
               "weights": int(self.mask.size), "empty_planes": self.empty_planes,
               "planes": int(self.mask.shape[0] * self.mask.shape[1])}
        if self.library is not None:
            out["keep_per_pattern"] = self.keep_per_pattern
            out["pattern_library"] = [p.astype(int).tolist() for p in self.library]
            out["pattern_usage"] = [int(u) for u in self.usage]
        out.update(self.info)
        return out


# ----------------------------------------------------------------------------- validation

def check_sparsity(value, name: str = "sparsity") -> float:
    """A target rate in [0, 1), or InputError naming it."""
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise InputError(f"must be a number in [0, 1), got {value!r}", field=name) from None
    if not 0.0 <= p < 1.0 or p != p:
        raise InputError(f"must be in [0, 1) (the fraction of weights removed), got {value}",
                         field=name)
    return p


def _check_weight(w, name) -> np.ndarray:
    arr = np.asarray(w)
    if arr.ndim != 4 or 0 in arr.shape:
        raise InputError(f"a conv weight must be 4-D (O, C, KH, KW) and non-empty, got shape "
                         f"{arr.shape}", layer=name, field="weight")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"weight must be floating point, got {arr.dtype}", layer=name, field="weight")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError("weight holds NaN or Inf", layer=name, field="weight")
    return arr


def _options(scope, metric, n_patterns, keep_per_pattern):
    if scope not in SCOPES:
        raise InputError(f"unknown scope {scope!r}; choose from {', '.join(SCOPES)}", field="scope")
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}", field="metric")
    if int(n_patterns) < 1:
        raise InputError(f"the pattern library needs at least 1 pattern, got {n_patterns}",
                         field="patterns")
    if keep_per_pattern is not None and int(keep_per_pattern) < 1:
        raise InputError(f"a pattern must keep at least 1 position, got {keep_per_pattern}",
                         field="keep_per_pattern")


def _importance(w: np.ndarray, metric: str) -> np.ndarray:
    """Per-element additive importance: |w| (L1) or w^2 (L2, sums to the squared norm)."""
    return np.abs(w) if metric == "l1" else w * w


def _unit_norm(summed: np.ndarray, metric: str) -> np.ndarray:
    return summed if metric == "l1" else np.sqrt(summed)


def _per_element(summed: np.ndarray, count: int, metric: str) -> np.ndarray:
    """Norm of a unit normalised by its size: mean |w| (L1) or RMS (L2)."""
    return summed / count if metric == "l1" else np.sqrt(summed / count)


def auto_keep_per_pattern(kernel_positions: int, sparsity: float) -> int:
    """k for the plane scope: PatDNN's 4/9 of the kernel, at least what the rate needs with
    every plane non-empty, at most the whole kernel."""
    k = max(round(DEFAULT_KEEP_FRACTION * kernel_positions), ceil((1 - sparsity) * kernel_positions - 1e-9))
    return int(min(max(k, 1), kernel_positions))


def budget(size: int, sparsity: float) -> int:
    """Elements a layer of ``size`` weights may keep at ``sparsity``."""
    return int(floor((1.0 - sparsity) * size + 1e-9))


# ----------------------------------------------------------------------------- plane scope

def _top_k_sets(imp: np.ndarray, k: int, center: int | None) -> np.ndarray:
    """bool (n, K): for every row the k most important positions (centre forced if given)."""
    n, K = imp.shape
    score = imp.copy()
    if center is not None:
        score[:, center] = np.inf
    idx = np.argsort(-score, axis=1, kind="stable")[:, :k]
    out = np.zeros((n, K), dtype=bool)
    np.put_along_axis(out, idx, True, axis=1)
    return out


def pattern_library(imp: np.ndarray, k: int, n_patterns: int, center: int | None = None,
                    iterations: int = 10) -> np.ndarray:
    """A library of at most ``n_patterns`` distinct k-position patterns (bool (P', K)) for the
    planes' importances ``imp`` (n_planes, K): frequency initialisation, Lloyd refinement."""
    cands = _top_k_sets(imp, k, center)
    uniq, counts = np.unique(cands, axis=0, return_counts=True)
    lib = uniq[np.argsort(-counts, kind="stable")[:n_patterns]]
    best = -np.inf
    best_lib = lib
    for _ in range(iterations):
        kept = imp @ lib.T.astype(imp.dtype)           # (n, P): importance kept by each pattern
        assign = kept.argmax(axis=1)
        total = float(kept.max(axis=1).sum())
        # stop when no longer improving (relative 1e-12); best is -inf before the first pass
        if np.isfinite(best) and total <= best + 1e-12 * abs(best):
            break
        best, best_lib = total, lib
        new = []
        for p in range(len(lib)):
            members = imp[assign == p]
            if len(members) == 0:
                continue
            new.append(_top_k_sets(members.sum(axis=0, keepdims=True), k, center)[0])
        lib = np.unique(np.array(new), axis=0)
    return best_lib


def _plane_candidates(w, metric, k, n_patterns, keep_center):
    O, C, KH, KW = w.shape
    K = KH * KW
    imp = _importance(w, metric).reshape(O * C, K)
    center = ((KH - 1) // 2) * KW + (KW - 1) // 2 if keep_center else None
    lib = pattern_library(imp, k, int(n_patterns), center)
    kept = imp @ lib.T.astype(imp.dtype)
    assign = kept.argmax(axis=1)
    score = kept[np.arange(O * C), assign]              # additive importance kept per plane
    return lib, assign, score, k


def _finish_plane(w, lib, assign, keep_planes, target, k, info=None) -> LayerMask:
    O, C, KH, KW = w.shape
    planes = lib[assign] & keep_planes[:, None]
    mask = planes.reshape(O, C, KH, KW)
    used = np.bincount(assign[keep_planes], minlength=len(lib))
    order = np.argsort(-used, kind="stable")
    order = order[used[order] > 0]
    return LayerMask(mask=mask, scope="plane", target_sparsity=target,
                     library=lib[order].reshape(-1, KH, KW), usage=used[order],
                     keep_per_pattern=k, info=dict(info or {}))


# ----------------------------------------------------------------------------- unit scopes

def _units(w, scope, metric):
    """(summed importance per unit (flat), elements per unit, expand(keep_flat) -> mask)."""
    O, C, KH, KW = w.shape
    imp = _importance(w, metric)
    if scope == "filter":
        summed = imp.sum(axis=1).reshape(-1)            # (O*KH*KW,)
        return summed, C, lambda keep: np.broadcast_to(keep.reshape(O, 1, KH, KW), w.shape).copy()
    summed = imp.sum(axis=(0, 1)).reshape(-1)           # (KH*KW,)
    return summed, O * C, lambda keep: np.broadcast_to(keep.reshape(1, 1, KH, KW), w.shape).copy()


def _center_units(w, scope) -> np.ndarray:
    O, C, KH, KW = w.shape
    c = ((KH - 1) // 2) * KW + (KW - 1) // 2
    if scope == "filter":
        return np.arange(O) * KH * KW + c
    return np.array([c])


def _choose(scores, n_keep, forced=None) -> np.ndarray:
    """bool keep over units: ``forced`` ones first (strongest first), then the strongest."""
    keep = np.zeros(len(scores), dtype=bool)
    n_keep = int(min(max(n_keep, 0), len(scores)))
    if forced is not None and len(forced):
        f = forced[np.argsort(-scores[forced], kind="stable")][:n_keep]
        keep[f] = True
    rest = np.argsort(-np.where(keep, -np.inf, scores), kind="stable")
    need = n_keep - int(keep.sum())
    if need > 0:
        keep[rest[:need]] = True
    return keep


# ----------------------------------------------------------------------------- public API

def select_mask(w, sparsity: float, scope: str = "plane", n_patterns: int = 8,
                keep_per_pattern: int | None = None, metric: str = "l2",
                keep_center: bool = False, name: str | None = None) -> LayerMask:
    """The prior-knowledge mask of one layer ``w`` (O, C, KH, KW) at ``sparsity`` (see module doc)."""
    return select_masks({name or "weight": w}, sparsity, scope=scope, n_patterns=n_patterns,
                        keep_per_pattern=keep_per_pattern, metric=metric,
                        keep_center=keep_center)[name or "weight"]


def select_masks(weights: dict, sparsity, scope: str = "plane", n_patterns: int = 8,
                 keep_per_pattern: int | None = None, metric: str = "l2",
                 keep_center: bool = False, global_target: bool = False) -> dict[str, LayerMask]:
    """Prior-knowledge masks for named conv weights (NumPy arrays (O, C, KH, KW)).

    ``sparsity``: one rate for every layer, or a dict name -> rate (per-layer only).
    ``global_target``: one budget ``floor((1 - sparsity) * total)`` over all layers, units
    ranked across layers by per-element norm; every layer keeps at least one unit.
    Returns name -> ``LayerMask``; each mask lies in the layer's constraint set.
    """
    _options(scope, metric, n_patterns, keep_per_pattern)
    if not weights:
        raise InputError("no conv weights to prune", field="layers")
    ws = {name: _check_weight(w, name) for name, w in weights.items()}
    if isinstance(sparsity, dict):
        if global_target:
            raise InputError("a global target takes one sparsity, not a per-layer dict",
                             field="sparsity")
        unknown = sorted(set(sparsity) - set(ws))
        if unknown:
            raise InputError(f"sparsity given for unknown layer(s) {', '.join(unknown)}",
                             field="sparsity")
        rates = {n: check_sparsity(sparsity.get(n, 0.0), f"sparsity[{n}]") for n in ws}
    else:
        p = check_sparsity(sparsity)
        rates = {n: p for n in ws}

    if not global_target:
        return {n: _select_layer(ws[n], rates[n], scope, n_patterns, keep_per_pattern, metric,
                                 keep_center) for n in ws}
    return _select_global(ws, rates[next(iter(ws))], scope, n_patterns, keep_per_pattern,
                          metric, keep_center)


def _select_layer(w, p, scope, n_patterns, keep_per_pattern, metric, keep_center) -> LayerMask:
    O, C, KH, KW = w.shape
    B = budget(w.size, p)
    if scope == "plane":
        k = int(keep_per_pattern or auto_keep_per_pattern(KH * KW, p))
        k = min(k, KH * KW)
        lib, assign, score, k = _plane_candidates(w, metric, k, n_patterns, keep_center)
        n_planes = max(1, min(O * C, B // k))
        keep = _choose(score, n_planes)
        return _finish_plane(w, lib, assign, keep, p, k)
    summed, size, expand = _units(w, scope, metric)
    n_units = max(1, B // size)
    keep = _choose(summed, n_units, _center_units(w, scope) if keep_center else None)
    return LayerMask(mask=expand(keep), scope=scope, target_sparsity=p)


def _select_global(ws, p, scope, n_patterns, keep_per_pattern, metric, keep_center):
    names = list(ws)
    total = sum(w.size for w in ws.values())
    B = budget(total, p)
    # candidate units of every layer: (layer index, unit index, size, per-element score)
    per_layer = []
    for i, n in enumerate(names):
        w = ws[n]
        O, C, KH, KW = w.shape
        if scope == "plane":
            k = int(keep_per_pattern or auto_keep_per_pattern(KH * KW, p))
            k = min(k, KH * KW)
            lib, assign, score, k = _plane_candidates(w, metric, k, n_patterns, keep_center)
            per_layer.append({"lib": lib, "assign": assign, "k": k, "sum": score,
                              "size": k, "forced": None})
        else:
            summed, size, expand = _units(w, scope, metric)
            per_layer.append({"sum": summed, "size": size, "expand": expand,
                              "forced": _center_units(w, scope) if keep_center else None})
    keeps = [np.zeros(len(d["sum"]), dtype=bool) for d in per_layer]
    used = 0
    # every layer keeps its strongest unit (and its forced centre units when affordable)
    for d, keep in zip(per_layer, keeps):
        first = _choose(d["sum"], 1, d["forced"])
        keep |= first
        used += d["size"] * int(first.sum())
    for d, keep in zip(per_layer, keeps):
        if d["forced"] is not None:
            for u in d["forced"][np.argsort(-d["sum"][d["forced"]], kind="stable")]:
                if not keep[u] and used + d["size"] <= B:
                    keep[u] = True
                    used += d["size"]
    scores = np.concatenate([_per_element(d["sum"], d["size"], metric) for d in per_layer])
    layer_of = np.concatenate([np.full(len(d["sum"]), i) for i, d in enumerate(per_layer)])
    unit_of = np.concatenate([np.arange(len(d["sum"])) for d in per_layer])
    for j in np.argsort(-scores, kind="stable"):
        i, u = int(layer_of[j]), int(unit_of[j])
        size = per_layer[i]["size"]
        if keeps[i][u] or used + size > B:
            continue
        keeps[i][u] = True
        used += size
    out = {}
    for n, d, keep in zip(names, per_layer, keeps):
        info = {"global_target_sparsity": round(p, 6)}
        if scope == "plane":
            out[n] = _finish_plane(ws[n], d["lib"], d["assign"], keep, p, d["k"], info)
        else:
            out[n] = LayerMask(mask=d["expand"](keep), scope=scope, target_sparsity=p, info=info)
    return out


def random_masks(weights: dict, sparsity: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Unstructured random masks keeping ``budget(size, sparsity)`` elements of each layer:
    the baseline a chosen mask must beat."""
    rng = np.random.default_rng(seed)
    out = {}
    for n, w in weights.items():
        w = np.asarray(w)
        keep = np.zeros(w.size, dtype=bool)
        keep[rng.choice(w.size, size=max(1, budget(w.size, sparsity)), replace=False)] = True
        out[n] = keep.reshape(w.shape)
    return out


__all__ = ["SCOPES", "METRICS", "LayerMask", "select_mask", "select_masks", "pattern_library",
           "random_masks", "check_sparsity", "budget", "auto_keep_per_pattern"]
