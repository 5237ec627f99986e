"""The numba backend: shift-and-accumulate sparse convolution, JIT-compiled for the host CPU.

Kernels (one shared engine, one registry entry per format it reads):

    pattern_f32_numba   KEP pattern format
    csr_f32_numba       element CSR format
    dense_f32_numba     dense format (every stored position, zeros included)

Algorithm (the specification in ``reference.py``, reorganised so LLVM vectorises it):

1. Per call, the input is padded and split by stride phase ("space to depth") into
       Xs[n, c, ph, pw, i, j] = Xp[n, c, i*sh + ph, j*sw + pw]      (0 outside the input)
   of plane size Hs x Ws (Hs = ceil(Hp / sh), Ws = ceil(Wp / sw)). A kernel tap (kh, kw)
   then reads the phase plane (kh*dh % sh, kw*dw % sw) at row/column offset
   (kh*dh // sh, kw*dw // sw) with unit stride, so every stride becomes stride 1.
2. An output plane is computed "wide": as the flat vector Yw[q] = Yw[ho * Ws + wo] over
   0 <= q < (Ho - 1) * Ws + Wo. In that flat numbering every stored weight
   (c, kh, kw) = w is one contiguous AXPY:  Yw[q] += w * Xs_flat[n, c, tapoff(kh, kw) + q],
   a unit-stride loop LLVM vectorises whatever the stride, padding or dilation. The columns
   wo >= Wo of the wide rows are computed and thrown away (Ws - Wo of every Ws, e.g. 2/58
   at 56x56, 2/9 at 7x7).
   The last partial vector of a chunk is computed whole (Xs has _VEC floats of slack).
3. The wide plane is cut into chunks of whole rows (about ``_CHUNK`` floats: one output
   channel's accumulator, L1-resident). A parallel task is (image, row chunk, block of
   output channels), at least ``_MIN_TASKS`` per image, handed out dynamically (prange,
   chunksize 1). For each output channel of the task, its entries are applied eight at a
   time (one accumulator load/store per eight FMAs, all operands zmm), then four, then one;
   bias, ReLU and the crop to Wo are fused into the store to ``y``.

"Output channels sharing kept positions" are not register-blocked here: with random KEP
planes (a pattern per (o, c) plane) two output channels rarely share a (c, kh, kw), so one
input vector feeding several output channels would mostly multiply zeros; instead one
accumulator load feeds eight FMAs, and every input vector feeds one.

Accumulation is float32 in the order of the prepared entries (input channel, then kernel
row, then column); every step is the same fused a += w * x whatever the grouping, so
results are bitwise identical for any ``threads`` and any task split.
``fastmath={"contract"}`` only lets LLVM fuse multiply+add into FMA (no reassociation,
no finite-math assumptions). The packed input lives in a per-thread reusable workspace.

Prepared (repacked once, by ``prepare`` through the format's ``coo()``) layout, a dict:
    indptr  int64 (O + 1,)   entries of output channel o are [indptr[o], indptr[o + 1])
    chan    int32 (nnz,)     input channel inside o's group
    tap     int32 (nnz,)     kh * KW + kw
    val     float32 (nnz,)   the weight
    row     int32 (nnz,)     output channel of each entry
Entries of one output channel are ordered by (chan, tap). Per input shape and geometry a
plan (sizes, tasks, and off[e] = entry's start in one image's flat Xs) is computed once
and cached in the prepared dict. Importing this module compiles nothing: kernels compile
on first call (~5 s) and are cached on disk (``cache=True``, ~0.4 s to load).
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from .registry import Kernel, register
from ..errors import InputError

try:  # the module must import (and register) without numba; kernels then say why not
    import numba
    from numba import njit, prange
    _NUMBA_MISSING: str | None = None
except ImportError as exc:  # pragma: no cover - exercised only without numba
    numba = None
    _NUMBA_MISSING = f"numba is not importable: {exc}"

    def njit(*args, **kwargs):  # noqa: D103 - stand-in decorator
        if args and callable(args[0]):
            return args[0]
        return lambda f: f

    prange = range

_CHUNK = 1024       # target floats of one output channel's accumulator chunk (4 KiB)
_MIN_TASKS = 32     # parallel tasks per image at least (row chunks x output-channel blocks)
_VEC = 16           # chunks round up to whole AVX-512 vectors (no scalar remainder loops)
_FLAGS = dict(cache=True, nogil=True, fastmath={"contract"})


def _available() -> str | None:
    return _NUMBA_MISSING


# --------------------------------------------------------------------------- kernels

@njit(parallel=True, **_FLAGS)
def _pack_input(x, pt, pl, sh, sw, Hs, Ws, xflat):
    """Pad + stride-phase split into xflat[n] = Xs[n] flattened, with
    Xs[n, c, ph, pw, i, j] = x[n, c, i*sh + ph - pt, j*sw + pw - pl] (0 outside x)."""
    N, C, H, W = x.shape
    CS = sh * sw * Hs * Ws
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        xc = xflat[n, c * CS:(c + 1) * CS]
        for ph in range(sh):
            for pw in range(sw):
                for i in range(Hs):
                    row = xc[((ph * sw + pw) * Hs + i) * Ws:]
                    r = i * sh + ph - pt
                    if r < 0 or r >= H:
                        for j in range(Ws):
                            row[j] = 0.0
                        continue
                    src = x[n, c, r]
                    for j in range(Ws):
                        col = j * sw + pw - pl
                        if col >= 0 and col < W:
                            row[j] = src[col]
                        else:
                            row[j] = 0.0


@njit(**_FLAGS)
def _axpy_entries(acc, xn, off, val, e, e1, q0, m):
    """acc[:m] += sum over entries e..e1-1 of val[e] * xn[off[e] + q0 : ... + m], in order.

    Eight entries per pass over acc (one accumulator load/store per eight FMAs), then four,
    then one. Every step is the same fused a += w * x, so the grouping never changes the
    result. m is a multiple of _VEC: LLVM's vector loop runs whole, no scalar remainder."""
    while e + 8 <= e1:
        x0 = xn[off[e] + q0:]
        x1 = xn[off[e + 1] + q0:]
        x2 = xn[off[e + 2] + q0:]
        x3 = xn[off[e + 3] + q0:]
        x4 = xn[off[e + 4] + q0:]
        x5 = xn[off[e + 5] + q0:]
        x6 = xn[off[e + 6] + q0:]
        x7 = xn[off[e + 7] + q0:]
        w0 = val[e]
        w1 = val[e + 1]
        w2 = val[e + 2]
        w3 = val[e + 3]
        w4 = val[e + 4]
        w5 = val[e + 5]
        w6 = val[e + 6]
        w7 = val[e + 7]
        for i in range(m):
            a = acc[i]
            a += w0 * x0[i]
            a += w1 * x1[i]
            a += w2 * x2[i]
            a += w3 * x3[i]
            a += w4 * x4[i]
            a += w5 * x5[i]
            a += w6 * x6[i]
            a += w7 * x7[i]
            acc[i] = a
        e += 8
    if e + 4 <= e1:
        x0 = xn[off[e] + q0:]
        x1 = xn[off[e + 1] + q0:]
        x2 = xn[off[e + 2] + q0:]
        x3 = xn[off[e + 3] + q0:]
        w0 = val[e]
        w1 = val[e + 1]
        w2 = val[e + 2]
        w3 = val[e + 3]
        for i in range(m):
            a = acc[i]
            a += w0 * x0[i]
            a += w1 * x1[i]
            a += w2 * x2[i]
            a += w3 * x3[i]
            acc[i] = a
        e += 4
    while e < e1:
        x0 = xn[off[e] + q0:]
        w0 = val[e]
        for i in range(m):
            acc[i] += w0 * x0[i]
        e += 1


@njit(parallel=True, **_FLAGS)
def _conv_blocked(xflat, Ws, indptr, off, val, Ho, Wo, rows_per_chunk, OB,
                  bias, has_bias, relu, y):
    """y[n, o] = crop(sum over o's entries of val * shifted Xs plane) (+ bias, ReLU).

    ``xflat[n]`` is image n's Xs, flat, followed by at least _VEC floats of slack (chunks
    are computed in whole vectors; the overhang is garbage that is never stored). Entry e
    reads ``xflat[n, off[e] + q]`` for wide output position q; o's entries are
    ``indptr[o]:indptr[o + 1]``. A task is (image, chunk of output rows, block of OB output
    channels). (Blocking input channels so a block's rows stay in L1 across the task's
    output channels was measured slower: it shortens the runs of entries per pass, and
    Zen's L2 feeds these streaming loads well enough.)
    """
    N = xflat.shape[0]
    O = y.shape[1]
    qtot = (Ho - 1) * Ws + Wo
    L = rows_per_chunk * Ws
    Lp = (L + _VEC - 1) // _VEC * _VEC
    nK = (Ho + rows_per_chunk - 1) // rows_per_chunk
    nOB = (O + OB - 1) // OB
    for task in prange(N * nK * nOB):
        n = task // (nK * nOB)
        rest = task - n * (nK * nOB)
        k = rest // nOB
        o0 = (rest - k * nOB) * OB
        o1 = min(O, o0 + OB)
        q0 = k * L
        m = (min(L, qtot - q0) + _VEC - 1) // _VEC * _VEC
        xn = xflat[n]
        acc = np.zeros((o1 - o0) * Lp, np.float32)
        for o in range(o0, o1):
            e = indptr[o]
            e1 = indptr[o + 1]
            if e < e1:
                _axpy_entries(acc[(o - o0) * Lp:], xn, off, val, e, e1, q0, m)
        # crop the wide rows to Wo, fuse bias and ReLU
        r0 = k * rows_per_chunk
        r1 = min(r0 + rows_per_chunk, Ho)
        for o in range(o0, o1):
            b = bias[o] if has_bias else np.float32(0.0)
            yo = y[n, o]
            for r in range(r0, r1):
                src = acc[(o - o0) * Lp + (r - r0) * Ws:]
                dst = yo[r]
                for j in range(Wo):
                    v = src[j] + b
                    if relu and v < 0.0:
                        v = 0.0
                    dst[j] = v


# --------------------------------------------------------------------------- Python side

def prepare(fmt) -> dict:
    """Repack ``fmt`` once (through its ``coo()``) into per-output-channel entry lists."""
    O, Cg, KH, KW = fmt.shape
    o, c, kh, kw, v = fmt.coo()
    o = np.asarray(o, np.int64)
    c = np.asarray(c, np.int64)
    order = np.argsort((o * Cg + c) * (KH * KW) + np.asarray(kh, np.int64) * KW + kw,
                       kind="stable")
    indptr = np.zeros(O + 1, np.int64)
    np.cumsum(np.bincount(o, minlength=O), out=indptr[1:])
    return {
        "shape": (O, Cg, KH, KW),
        "indptr": indptr,
        "row": np.ascontiguousarray(o[order], np.int32),
        "chan": np.ascontiguousarray(c[order], np.int32),
        "tap": np.ascontiguousarray((np.asarray(kh, np.int64) * KW + kw)[order], np.int32),
        "val": np.ascontiguousarray(np.asarray(v)[order], np.float32),
        "zeros": np.zeros(O, np.float32),  # the bias when there is none
        "plans": {},  # (input shape, geometry) -> sizes and entry offsets, see _plan
    }


def _plan(prepared, C, H, W, geometry) -> tuple:
    """Sizes and entry offsets for one input shape and geometry; cached in ``prepared``.

    Returns (Ho, Wo, Hs, Ws, CS, rows_per_chunk, OB, off): off[e] is where entry e's
    shifted plane starts in one image's flat Xs; OB the output channels per task. None of
    it depends on the
    thread count, so results are identical for any ``threads``."""
    key = (C, H, W, geometry)
    cache = prepared["plans"]
    plan = cache.get(key)
    if plan is not None:
        return plan
    O, Cg, KH, KW = prepared["shape"]
    Ho, Wo = geometry.output_size(H, W, KH, KW)
    pt, pb, pl, pr = geometry.padding
    (sh, sw), (dh, dw) = geometry.stride, geometry.dilation
    Hs, Ws = -(-(H + pt + pb) // sh), -(-(W + pl + pr) // sw)
    plane = Hs * Ws
    CS = sh * sw * plane
    rh, rw = np.arange(KH, dtype=np.int64) * dh, np.arange(KW, dtype=np.int64) * dw
    tapoff = ((((rh % sh)[:, None] * sw + (rw % sw)[None, :]) * plane)
              + (rh // sh)[:, None] * Ws + (rw // sw)[None, :]).reshape(-1)
    ci = (prepared["row"].astype(np.int64) // (O // geometry.groups)) * Cg + prepared["chan"]
    off = np.ascontiguousarray(ci * CS + tapoff[prepared["tap"]], np.int64)
    R = _rows_per_chunk(Ho, Ws)
    # output-channel blocks: at least _MIN_TASKS tasks per image when the chunks are few
    nK = -(-Ho // R)
    OB = max(1, -(-O // max(1, -(-_MIN_TASKS // nK))))
    plan = (Ho, Wo, Hs, Ws, CS, R, OB, off)
    if len(cache) >= 8:
        cache.clear()
    cache[key] = plan
    return plan


_WORKSPACE = threading.local()


def _workspace(N: int, size: int) -> np.ndarray:
    """This thread's reusable (N, size) float32 buffer for the packed input, slack zeroed.

    Reusing it saves a fresh multi-100-KiB allocation (page faults) per call; the packer
    overwrites every element before the slack, so no stale data is ever read."""
    buf = getattr(_WORKSPACE, "buf", None)
    if buf is None or buf.size < N * size:
        buf = np.empty(N * size, np.float32)
        _WORKSPACE.buf = buf
    x = buf[:N * size].reshape(N, size)
    x[:, size - _VEC:] = 0.0
    return x


@contextlib.contextmanager
def _parallel(threads):
    """Run numba parallel regions with ``threads`` threads (None: numba's default), handing
    out prange iterations one task at a time (dynamic schedule: a thread that the OS
    pre-empts does not hold up the others' share). Both settings are restored afterwards."""
    if threads is not None:
        t = int(threads)
        if t < 1:
            raise InputError(f"threads must be >= 1, got {threads}", field="threads")
        previous = numba.get_num_threads()
        numba.set_num_threads(min(t, numba.config.NUMBA_NUM_THREADS))
    chunksize = numba.set_parallel_chunksize(1)
    try:
        yield
    finally:
        numba.set_parallel_chunksize(chunksize)
        if threads is not None:
            numba.set_num_threads(previous)


def _rows_per_chunk(Ho: int, Ws: int) -> int:
    """Whole rows per accumulator chunk: about _CHUNK floats, chunks of balanced size."""
    target = max(1, _CHUNK // Ws)
    n_chunks = -(-Ho // target)
    return -(-Ho // n_chunks)


def run(prepared, x, bias, geometry, relu=False, threads=None):
    if _NUMBA_MISSING is not None:
        from ..errors import BackendUnavailableError
        raise BackendUnavailableError(_NUMBA_MISSING, field="backend")
    # the boundary (conv2d) already gives float32 C-contiguous; a direct caller gets a copy
    x = np.ascontiguousarray(x, dtype=np.float32)
    N, C, H, W = x.shape
    Ho, Wo, Hs, Ws, CS, rows_per_chunk, OB, off = _plan(prepared, C, H, W, geometry)
    pt, _, pl, _ = geometry.padding
    sh, sw = geometry.stride
    O = prepared["shape"][0]
    has_bias = bias is not None
    b = np.ascontiguousarray(bias, dtype=np.float32) if has_bias else prepared["zeros"]
    xflat = _workspace(N, C * CS + _VEC)
    y = np.empty((N, O, Ho, Wo), np.float32)
    with _parallel(threads):
        _pack_input(x, pt, pl, sh, sw, Hs, Ws, xflat)
        _conv_blocked(xflat, Ws, prepared["indptr"], off, prepared["val"], Ho, Wo, rows_per_chunk, OB,
                      b, has_bias, bool(relu), y)
    return y


_CONSTRAINTS = ("float32 NCHW; any stride, 4-sided padding, dilation, groups; "
                "wide-row AXPY, entries 4 per accumulator pass, prange over (image, out channel)")

for _fmt, _priority in (("pattern", 0), ("csr", 0), ("dense", -10)):
    register(Kernel(name=f"{_fmt}_f32_numba", backend="numba", formats=(_fmt,), prepare=prepare,
                    run=run, isa="llvm-host", constraints=_CONSTRAINTS, available=_available,
                    priority=_priority))
