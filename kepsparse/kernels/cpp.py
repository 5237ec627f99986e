"""The C++ backend: register-tiled non-sliding-window sparse convolution (``kepsparse._core``).

Each stored weight scales one shifted (strided) input plane into one output plane, as in the
reference. ``prepare(fmt)`` repacks the format ONCE, through the format class's ``coo()``,
into a plan (layout documented in ``csrc/spconv.hpp``):

- output channels are reordered so channels with equal kept masks are adjacent (KEP: filters
  that share their patterns) and, for OB > 1, grouped greedily by shared kept positions, then
  cut into blocks of OB channels, OB in {1, 2, 4, 8};
- each block stores the union of its channels' kept positions as entries
  (``ci*KH*KW + kh*KW + kw``, sorted by input channel) with OB weights each (0 where a channel
  lacks that position), plus per-8-channel entry pointers for cache blocking over C;
- OB is chosen per layer by a measured cost model (``ENTRY_COST``): entries of the union times
  the time of one entry at that OB, so a wider block pays only when its channels share
  enough positions (dense-ish layers, filter-shared patterns).

The kernel keeps an OB x (up to 8 vectors) output tile in registers: one input vector load
feeds OB FMAs. Groups are resolved when the plan is built (entries name absolute input
channels), so plans are cached per ``groups`` value.

The ``pattern`` format also has the pattern-group kernels (``pattern_f32_grp4x*``, preferred by
``auto``): ``build_group_plan`` reads the format's ``ids()``, ``patterns`` and ``values`` and,
per input channel, gathers the planes that use the same library pattern. The pattern's (up
to 4) shifted input vectors x the pixel tile are loaded into registers once and feed every
plane of the group; accumulators of all output channels live in an L1/L2 tile buffer. This is
the structure KEP gives even when output channels do not share positions with each other
(independent per-plane pattern choice), where register blocks of output channels cannot help.

Threads: ``threads`` workers (None: OpenMP's default count) share the work items (image x
pixel tile x output-channel chunk) through a small pool in ``csrc/workpool.cpp`` in which the
caller never waits for a helper the OS has not scheduled; an OpenMP team's closing barrier
did (40-70 ms instead of 0.3 ms per call on this shared, oversubscribed machine). Results are
bit-identical for every thread count.

One kernel per (format, ISA): AVX-512, AVX2+FMA and portable, chosen by ``available()`` from
``kepsparse._core.cpu_features()``. Without the extension this module still imports and its
kernels report why they are unavailable.
"""
from __future__ import annotations

import functools
import os
import threading

import numpy as np

from ..blas import one_blas_thread
from ..errors import UnsupportedError
from .registry import Kernel, register

try:  # the extension is optional: no C++ compiler at install time means no _core
    from .. import _core
    _CORE_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - exercised only on compiler-less installs
    _core = None
    _CORE_ERROR = f"kepsparse._core not built: no C++ compiler at install time ({exc})"

#: ISAs in preference order: (name, required cpu_features, priority bonus)
ISAS = (("avx512", ("avx512f", "avx2", "fma"), 20),
        ("avx2", ("avx2", "fma"), 10),
        ("generic", (), 0))
OB_CHOICES = (1, 2, 4, 8)
#: Relative time of one entry (one input position of a block) by OB, per ISA. Measured on
#: Zen 4 (ResNet-18 3x3 layers, 1 thread): the kernel is bound by unaligned input loads, not
#: FMAs, so a second output channel on the same load is almost free while OB=8 (2-vector
#: tiles) is not. The other ISAs use an FMA-bound guess.
ENTRY_COST = {"avx512": {1: 1.0, 2: 1.07, 4: 1.5, 8: 2.9},
              "avx2": {1: 1.0, 2: 1.3, 4: 2.0},
              "generic": {1: 1.0, 2: 1.5, 4: 2.5}}


#: The C++ plans address an input entry as ci*KH*KW + kh*KW + kw in int32 (csrc/spconv.hpp).
MAX_PLAN_INDEX = 2**31


@functools.lru_cache(maxsize=None)
def _features() -> dict:
    """The CPU's ISA features; the CPU does not change, so asked once (the registry calls
    this often)."""
    return dict(_core.cpu_features()) if _core is not None else {}


def _check_plan_size(ctot: int, KH: int, KW: int) -> None:
    """UnsupportedError unless every (input channel, kernel position) index fits the plans'
    int32 (Ctot*KH*KW < 2**31)."""
    n = int(ctot) * int(KH) * int(KW)
    if n >= MAX_PLAN_INDEX:
        raise UnsupportedError(
            f"input channels x kernel positions = {ctot}*{KH}*{KW} = {n} is too large for the "
            f"cpp kernels: it must be below 2**31 ({MAX_PLAN_INDEX}, int32 plan indices)",
            field="shape")


def _isa_reason(isa: str, needs: tuple[str, ...]) -> str | None:
    if _core is None:
        return _CORE_ERROR
    missing = [f for f in needs if not _features().get(f, False)]
    if missing:
        return f"this CPU lacks {', '.join(missing)} (needed by the {isa} kernel)"
    return None


#: Above this many output channels the greedy regrouping (O x O overlaps) is skipped.
GREEDY_MAX_CHANNELS = 4096


def _overlaps(masks: np.ndarray) -> np.ndarray | None:
    """Kept positions shared by every pair of output channels (O x O, one matrix product),
    or None when the greedy regrouping does not apply (one channel, or too many)."""
    O = masks.shape[0]
    if O <= 1 or O > GREEDY_MAX_CHANNELS:
        return None
    m = masks.astype(np.float32)
    with one_blas_thread():  # a threaded BLAS call leaves a worker spinning (kepsparse/blas.py)
        return m @ m.T


def _greedy_order(overlap: np.ndarray | None, ob: int, base: np.ndarray) -> np.ndarray:
    """Channels in blocks of ``ob`` that share many kept positions (greedy on pair overlaps).

    Starts each block with the first unplaced channel of ``base`` and adds the channel with
    the largest overlap with the block so far. ``overlap`` comes from ``_overlaps`` (computed
    once per layer, shared by every OB tried); None keeps ``base``."""
    O = len(base)
    if overlap is None or ob == 1 or O <= ob:
        return base
    placed = np.zeros(O, dtype=bool)
    order = []
    for first in base:
        if placed[first]:
            continue
        block = [first]
        placed[first] = True
        score = overlap[first].copy()
        while len(block) < ob and not placed.all():
            score[placed] = -1.0
            nxt = int(np.argmax(score))
            block.append(nxt)
            placed[nxt] = True
            score += overlap[nxt]
        order.extend(block)
    return np.asarray(order, dtype=np.int64)


def _choose_ob(masks: np.ndarray, base: np.ndarray, isa: str):
    """OB and channel order for a layer (masks: bool (O, Ctot*KK)): the cheapest by the
    measured cost model ``ENTRY_COST`` (entries of the blocks' unions x time per entry)."""
    O = masks.shape[0]
    try:  # KEPSPARSE_CPP_OB=1|2|4|8 forces the block width (for measurements)
        forced = int(os.environ.get("KEPSPARSE_CPP_OB", "0"))
    except ValueError:
        forced = 0
    best = None
    overlap, have_overlap = None, False  # computed once, on the first OB > 1 tried
    for ob in OB_CHOICES:
        if _core.spconv_tile_vectors(isa, ob) == 0 or (ob > 1 and O < ob):
            continue
        if forced in OB_CHOICES and forced != ob:
            continue
        if ob > 1 and not have_overlap:
            overlap, have_overlap = _overlaps(masks), True
        order = _greedy_order(overlap, ob, base)
        cost = _union_entries(masks, order, ob) * ENTRY_COST[isa][ob]
        if best is None or cost < best[0]:
            best = (cost, ob, order)
    if best is None:
        return 1, base
    return best[1], best[2]


def _union_entries(masks, order, ob):
    O = len(order)
    nb = -(-O // ob)
    m = np.zeros((nb * ob, masks.shape[1]), dtype=bool)
    m[:O] = masks[order]
    return int(m.reshape(nb, ob, -1).any(axis=1).sum())


def build_plan(fmt, groups: int, isa: str, ob: int | None = None):
    """The C++ plan of a format object for ``groups`` and ``isa`` (layout: csrc/spconv.hpp)."""
    O, Cg, KH, KW = fmt.shape
    KK = KH * KW
    Ctot = Cg * groups
    _check_plan_size(Ctot, KH, KW)
    o, c, kh, kw, v = fmt.coo()
    o = np.asarray(o, np.int64)
    ci = (o // (O // groups)) * Cg + np.asarray(c, np.int64)
    key = ci * KK + np.asarray(kh, np.int64) * KW + np.asarray(kw, np.int64)
    v = np.asarray(v, np.float32)
    CK = Ctot * KK
    masks = np.zeros((O, CK), dtype=bool)
    masks[o, key] = True
    # channels with equal masks adjacent (lexicographic order of the masks), then by index;
    # for OB > 1 regrouped greedily so a block's channels share kept positions
    _, inverse = np.unique(np.packbits(masks, axis=1), axis=0, return_inverse=True)
    order = np.argsort(inverse.reshape(-1), kind="stable")
    if ob is None:
        ob, order = _choose_ob(masks, order, isa)
    else:
        order = _greedy_order(_overlaps(masks) if 1 < ob < O else None, ob, order)
    nb = -(-O // ob)
    out_ch = np.full(nb * ob, -1, dtype=np.int32)
    out_ch[:O] = order
    slot = np.empty(O, dtype=np.int64)
    slot[order] = np.arange(O)
    block, lane = slot[o] // ob, slot[o] % ob
    comp = block * CK + key
    uniq, inv = np.unique(comp, return_inverse=True)
    w = np.zeros((len(uniq), ob), dtype=np.float32)
    w[inv.reshape(-1), lane] = v
    ck = (uniq % CK).astype(np.int32)
    ncg = -(-Ctot // 8)
    bounds = (np.arange(nb, dtype=np.int64)[:, None] * CK
              + np.minimum(np.arange(ncg + 1, dtype=np.int64) * 8, Ctot)[None, :] * KK)
    bounds[:, -1] = (np.arange(nb, dtype=np.int64) + 1) * CK  # the block's end
    cptr = np.searchsorted(uniq, bounds.reshape(-1), side="left").astype(np.int64)
    return _core.SpconvPlan(O, Ctot, KH, KW, ob, out_ch, ck, w.reshape(-1), cptr)


def build_group_plan(fmt, groups: int, och: int | None = None):
    """The pattern-group plan of a ``pattern`` format object (layout: GroupPlan, csrc/spconv.hpp).

    Read from the format's own arrays: ``ids()`` (pattern of every plane), ``patterns`` (the
    library) and ``values`` (each plane's weights at its pattern's positions, (o, c) order)."""
    O, Cg, KH, KW = fmt.shape
    och = O if och is None else int(och)
    _check_plan_size(Cg * groups, KH, KW)
    KK = KH * KW
    Og = O // groups
    ids = fmt.ids()
    lib = fmt.patterns.reshape(fmt.n_patterns, KK).astype(bool)
    popc = lib.sum(axis=1).astype(np.int64)
    pos = np.zeros((len(lib), KK), dtype=np.int64)  # positions of each pattern, row-major
    for p in range(len(lib)):
        nz = np.flatnonzero(lib[p])
        pos[p, :len(nz)] = nz
    counts = popc[ids].reshape(-1)
    vstart = np.cumsum(counts) - counts  # first value of every plane
    oo, cc = np.nonzero(ids)
    pid = ids[oo, cc]
    vs = vstart[oo * Cg + cc]
    ci = (oo // Og) * Cg + cc
    reps = (popc[pid] + 3) // 4  # position chunks (groups) per plane
    e_plane = np.repeat(np.arange(len(oo)), reps)
    e_pc = np.arange(len(e_plane)) - np.repeat(np.cumsum(reps) - reps, reps)
    e_o, e_ci, e_p = oo[e_plane], ci[e_plane], pid[e_plane]
    e_chunk = e_o // och
    order = np.lexsort((e_o, e_pc, e_p, e_ci, e_chunk))
    e_plane, e_pc, e_o, e_ci, e_p, e_chunk = (a[order] for a in (e_plane, e_pc, e_o, e_ci, e_p, e_chunk))
    E = len(e_o)
    newgrp = np.ones(E, dtype=bool)
    if E:
        newgrp[1:] = ((np.diff(e_chunk) != 0) | (np.diff(e_ci) != 0) | (np.diff(e_p) != 0)
                      | (np.diff(e_pc) != 0))
    starts = np.flatnonzero(newgrp)
    grp_ptr = np.append(starts, E).astype(np.int64)
    g_p, g_pc, g_ci, g_chunk = e_p[starts], e_pc[starts], e_ci[starts], e_chunk[starts]
    g_np = np.minimum(4, popc[g_p] - 4 * g_pc)
    cols = 4 * g_pc[:, None] + np.arange(4)[None, :]
    grp_k = np.where(np.arange(4)[None, :] < g_np[:, None],
                     pos[g_p[:, None], np.minimum(cols, KK - 1)], 0)
    e_np = np.minimum(4, popc[e_p] - 4 * e_pc)
    widx = vs[e_plane][:, None] + 4 * e_pc[:, None] + np.arange(4)[None, :]
    valid = np.arange(4)[None, :] < e_np[:, None]
    vals = np.asarray(fmt.values, np.float32)
    ch_w = np.where(valid, vals[np.minimum(widx, max(len(vals) - 1, 0))] if len(vals) else 0.0, 0.0)
    nchunks = -(-O // och)
    chunk_ptr = np.searchsorted(g_chunk, np.arange(nchunks + 1), side="left").astype(np.int64)
    return _core.GroupPlan(O, Cg * groups, KH, KW, och, g_ci.astype(np.int32),
                           grp_k.astype(np.int32).reshape(-1), g_np.astype(np.int32), grp_ptr,
                           (e_o - e_chunk * och).astype(np.int32),
                           ch_w.astype(np.float32).reshape(-1), chunk_ptr)


class _Prepared:
    """A format's plans, one per (groups) value, built on first use."""

    def __init__(self, fmt, isa: str, kind: str = "blocks"):
        self.fmt = fmt
        self.isa = isa
        self.kind = kind
        self.plans: dict[tuple, object] = {}
        self.calls: dict[tuple, tuple] = {}  # (x.shape, geometry, threads) -> call arguments
        self._lock = threading.Lock()

    def plan(self, groups: int, och: int | None = None):
        key = (groups, och)
        p = self.plans.get(key)
        if p is None:
            with self._lock:
                p = self.plans.get(key)
                if p is None:
                    p = self.plans[key] = (
                        build_plan(self.fmt, groups, self.isa) if self.kind == "blocks"
                        else build_group_plan(self.fmt, groups, och=och))
        return p


def _group_chunk(O: int, N: int, Ho: int, Wo: int, threads: int | None) -> int:
    """Output channels per chunk of the pattern-group kernel: all of them (the largest groups;
    measured best), split only as far as needed to give every thread work when the image has
    few pixel tiles (e.g. 7x7 layers at batch 1)."""
    nt = threads if threads else (_core.openmp_max_threads() or 1)
    tiles = N * max(1, -(-Ho * (Wo + 2) // 96))
    if tiles >= nt:
        return O
    parts = -(-nt // tiles)  # one chunk per thread
    chunk = -(-O // parts)
    return min(O, max(8, -(-chunk // 8) * 8))


#: Cost of the pattern-group plan in the units of ENTRY_COST (one block entry at OB=1):
#: per group (its input vectors loaded) and per channel entry (accumulators loaded, FMAs,
#: stored). Fitted on Zen 5, 1 thread, the ResNet-18 and CIFAR ResNet-56 3x3 layers with
#: KEP, filter-shared and unstructured weights at 50-95 % sparsity: choosing by
#: min(estimate) was within 5 % of the faster plan on 150 of 156 layers, worst 18 %
#: (benchmarks/README.md, "auto's plan choice"). Other ISAs: the same rule, unmeasured.
GROUP_COST, GROUP_ENTRY_COST = 2.2, 1.3


def _make_estimate(isa: str, kind: str):
    def estimate(prepared: "_Prepared", groups: int) -> float:
        if kind == "blocks":
            plan = prepared.plan(groups)
            return plan.entries * ENTRY_COST[isa][plan.OB]
        plan = prepared.plan(groups, prepared.fmt.shape[0])  # one chunk: all channels
        return GROUP_COST * plan.groups + GROUP_ENTRY_COST * plan.entries
    return estimate


def _make_prepare(isa: str, kind: str = "blocks"):
    def prepare(fmt):
        _, Cg, KH, KW = fmt.shape
        _check_plan_size(Cg, KH, KW)  # groups > 1 multiply this; checked again per plan
        return _Prepared(fmt, isa, kind)
    return prepare


def _call_args(prepared: _Prepared, x_shape, geometry, threads) -> tuple:
    """(plan, isa, stride, padding, dilation, out_hw, threads) of ``_core.spconv_run`` for
    an input shape. Depends on (input shape, geometry, threads) only: worked out once per
    key (a network calls each layer with one shape; ~1 us saved per call)."""
    key = (x_shape, geometry, threads)
    call = prepared.calls.get(key)
    if call is None:
        O, Cg, KH, KW = prepared.fmt.shape
        Ho, Wo = geometry.output_size(x_shape[2], x_shape[3], KH, KW)
        if prepared.kind == "blocks":
            plan = prepared.plan(geometry.groups)
        else:
            plan = prepared.plan(geometry.groups, _group_chunk(O, x_shape[0], Ho, Wo, threads))
        call = (plan, prepared.isa, tuple(geometry.stride), tuple(geometry.padding),
                tuple(geometry.dilation), (Ho, Wo), 0 if threads is None else int(threads))
        if len(prepared.calls) < 64:  # bounded: a caller may feed many shapes
            prepared.calls[key] = call
    return call


def run(prepared: _Prepared, x, bias, geometry, relu=False, threads=None, residual=None):
    plan, isa, stride, padding, dilation, out_hw, nthreads = _call_args(
        prepared, x.shape, geometry, threads)
    return _core.spconv_run(plan, isa, x, bias, stride, padding, dilation, out_hw, bool(relu),
                            nthreads, residual)


def bind(prepared: _Prepared, x_shape, geometry, threads, bias):
    """``run`` for inputs of shape ``x_shape`` and this ``bias``, as a ``_core.SpconvCall``:
    the plan, bias and shape-dependent set-up are bound once, so a call converts three
    arguments. ``call(x, relu, residual=None)`` returns None (computing nothing) when x holds
    a NaN/Inf: the caller then runs dense semantics (conv.bind_prepared)."""
    plan, isa, stride, padding, dilation, out_hw, nthreads = _call_args(
        prepared, tuple(x_shape), geometry, threads)
    return _core.SpconvCall(plan, isa, tuple(x_shape), bias, stride, padding, dilation,
                            out_hw, nthreads)


_TILE_NAMES = {"avx512": "o1to8x128", "avx2": "o1to4x64", "generic": "o1to4x32"}

for _fmt in ("pattern", "csr", "dense"):
    for _isa, _needs, _bonus in ISAS:
        register(Kernel(
            name=f"{_fmt}_f32_{_TILE_NAMES[_isa]}_{_isa}",
            backend="cpp",
            formats=(_fmt,),
            prepare=_make_prepare(_isa),
            run=run,
            isa=_isa,
            constraints=("float32 NCHW, any stride/padding/dilation/groups; register tile of "
                         "OB in {1,2,4,8} output channels (chosen per layer) x up to "
                         f"{_TILE_NAMES[_isa].split('x')[1]} pixels"),
            available=(lambda isa=_isa, needs=_needs: _isa_reason(isa, needs)),
            priority=100 + _bonus if _fmt != "dense" else 50 + _bonus,
            fuses_residual=True,
            estimate=_make_estimate(_isa, "blocks"),
            bind=bind,
        ))

_GROUP_TILES = {"avx512": "grp4x96", "avx2": "grp4x16", "generic": "grp4x8"}

for _isa, _needs, _bonus in ISAS:
    register(Kernel(
        name=f"pattern_f32_{_GROUP_TILES[_isa]}_{_isa}",
        backend="cpp",
        formats=("pattern",),
        prepare=_make_prepare(_isa, "groups"),
        run=run,
        isa=_isa,
        constraints=("pattern format only: per input channel, the planes sharing a library "
                     "pattern form a group; up to 4 positions x "
                     f"{_GROUP_TILES[_isa].split('x')[1]} pixels of input held in registers "
                     "feed every output channel of the group"),
        available=(lambda isa=_isa, needs=_needs: _isa_reason(isa, needs)),
        priority=110 + _bonus,
        fuses_residual=True,
        estimate=_make_estimate(_isa, "groups"),
        bind=bind,
    ))
