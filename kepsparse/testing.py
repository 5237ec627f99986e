"""Shared edge-case sets, used by the tests of every format and kernel and by benchmarks.

``edge_case_weights()`` yields (label, dense weight) pairs covering the sparsity structures
that break kernels: all-zero filters, fully dense filters, single elements, empty planes,
1x1/3x3/5x5/7x7 and rectangular kernels, C or O of 1, tile tails. ``conv_cases()`` yields
geometry + input shapes. ``make_kep_weight`` builds a KEP-structured weight (per-plane
patterns from a small library, some empty planes).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np


def make_kep_weight(rng, O, C, KH, KW, keep_per_plane=4, n_patterns=8, empty_planes=0.3):
    """A weight whose planes keep ``keep_per_plane`` positions from a library of
    ``n_patterns`` patterns, with a fraction ``empty_planes`` of planes all zero."""
    k = KH * KW
    keep = min(keep_per_plane, k)
    library = np.zeros((n_patterns, k), dtype=bool)
    for p in range(n_patterns):
        library[p, rng.choice(k, size=keep, replace=False)] = True
    ids = rng.integers(0, n_patterns, size=(O, C))
    mask = library[ids].reshape(O, C, KH, KW)
    mask &= (rng.random((O, C)) >= empty_planes)[:, :, None, None]
    w = rng.standard_normal((O, C, KH, KW)).astype(np.float32)
    w[np.abs(w) < 1e-3] = 1e-3  # kept positions stay non-zero
    return np.where(mask, w, np.float32(0))


def random_sparse_weight(rng, shape, sparsity):
    w = rng.standard_normal(shape).astype(np.float32)
    w[np.abs(w) < 1e-3] = 1e-3
    w[rng.random(shape) < sparsity] = 0
    return w


def edge_case_weights(seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    for k in (1, 3, 5, 7):
        yield f"random_{k}x{k}", random_sparse_weight(rng, (6, 5, k, k), 0.7)
    yield "rect_3x5", random_sparse_weight(rng, (4, 3, 3, 5), 0.6)
    yield "rect_1x3", random_sparse_weight(rng, (5, 2, 1, 3), 0.5)
    w = random_sparse_weight(rng, (8, 4, 3, 3), 0.5)
    w[2] = 0
    w[5] = 0
    yield "zero_filters", w
    yield "all_zero", np.zeros((3, 2, 3, 3), np.float32)
    yield "dense", random_sparse_weight(rng, (4, 3, 3, 3), 0.0)
    w = np.zeros((3, 4, 3, 3), np.float32)
    w[1, 2, 0, 2] = 1.5
    yield "single_element", w
    yield "O_is_1", random_sparse_weight(rng, (1, 6, 3, 3), 0.6)
    yield "C_is_1", random_sparse_weight(rng, (7, 1, 3, 3), 0.4)
    yield "kep_patterns", make_kep_weight(rng, 16, 8, 3, 3)
    yield "kep_tail_O", make_kep_weight(rng, 13, 5, 3, 3, keep_per_plane=2, n_patterns=4)
    w = make_kep_weight(rng, 8, 6, 3, 3, keep_per_plane=3, n_patterns=1, empty_planes=0.0)
    yield "filter_shared", w
    yield "one_dense_filter", np.concatenate(
        [random_sparse_weight(rng, (1, 4, 3, 3), 0.0), random_sparse_weight(rng, (5, 4, 3, 3), 0.9)])


def conv_cases() -> Iterator[dict]:
    """Geometry and input sizes: stride 1/2/3, padding 0/1/2 and asymmetric, dilation 1/2,
    non-square inputs, batch 1 and 4, sizes that do not divide a tile."""
    yield dict(stride=1, padding=0, dilation=1, batch=1, hw=(9, 9))
    yield dict(stride=1, padding=1, dilation=1, batch=4, hw=(11, 7))
    yield dict(stride=2, padding=1, dilation=1, batch=1, hw=(13, 10))
    yield dict(stride=2, padding=2, dilation=2, batch=2, hw=(17, 15))
    yield dict(stride=3, padding=2, dilation=1, batch=1, hw=(19, 23))
    yield dict(stride=(1, 2), padding=(2, 1), dilation=(2, 1), batch=1, hw=(12, 14))
    yield dict(stride=1, padding=(0, 1, 2, 1), dilation=1, batch=1, hw=(10, 9))
    yield dict(stride=1, padding=3, dilation=1, batch=1, hw=(1, 1))
    # strided packing corners: left padding wider than the stride, inputs narrower than a
    # stride, stride wider than the kernel (input columns no output reads)
    yield dict(stride=2, padding=(0, 1, 3, 0), dilation=1, batch=1, hw=(5, 1))
    yield dict(stride=(2, 3), padding=(1, 1, 2, 2), dilation=(1, 2), batch=2, hw=(6, 2))
    yield dict(stride=4, padding=0, dilation=1, batch=1, hw=(21, 33))
    # column stride 2 over rows wider than two vectors: full even/odd blocks, one ending
    # exactly at a row's last float (64 columns, no padding), and masked tails (75 columns)
    yield dict(stride=2, padding=0, dilation=1, batch=1, hw=(5, 64))
    yield dict(stride=2, padding=1, dilation=1, batch=2, hw=(6, 75))


def case_id(case: dict) -> str:
    return "s{stride}-p{padding}-d{dilation}-n{batch}-{hw[0]}x{hw[1]}".format(**case).replace(" ", "")
