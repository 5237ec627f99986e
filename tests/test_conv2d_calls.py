"""``kepsparse.conv2d`` called many times on one format object: the bound calls it keeps
(conv.run_conv) must follow every argument that changes between calls."""
from __future__ import annotations

import numpy as np

import kepsparse as ks
from kepsparse.conv import BOUND_PER_FORMAT
from kepsparse.testing import make_kep_weight

from .conftest import torch_conv2d


def test_a_bias_changed_in_place_between_calls_is_used(rng):
    w = make_kep_weight(rng, 8, 4, 3, 3)
    fmt = ks.pack(w, "pattern")
    x = rng.standard_normal((1, 4, 9, 11)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    for _ in range(3):
        y = ks.conv2d(x, fmt, bias, padding=1, backend="auto", relu=True)
        expected = np.maximum(torch_conv2d(x, w, bias, padding=1), 0)
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
        bias += 1.5  # the same array, new values
    y = ks.conv2d(x, fmt, None, padding=1, backend="auto")
    np.testing.assert_allclose(y, torch_conv2d(x, w, padding=1), rtol=1e-4, atol=1e-5)


def test_shapes_backends_and_threads_alternating_on_one_format(rng):
    w = make_kep_weight(rng, 6, 3, 3, 3)
    fmt = ks.pack(w, "pattern")
    xs = [rng.standard_normal(s).astype(np.float32)
          for s in [(1, 3, 8, 8), (2, 3, 8, 8), (1, 3, 13, 7)]]
    for _ in range(2):
        for x in xs:
            for backend in ("auto", "cpp", "reference"):
                for threads in (None, 1, 2):
                    for stride in (1, 2):
                        y = ks.conv2d(x, fmt, stride=stride, padding=1, backend=backend,
                                      threads=threads)
                        np.testing.assert_allclose(
                            y, torch_conv2d(x, w, stride=stride, padding=1),
                            rtol=1e-4, atol=1e-5)
    # every combination above was bound once; the oldest were dropped
    assert len(fmt.__dict__["_bound"]) == BOUND_PER_FORMAT


def test_a_nan_input_after_bound_calls_takes_dense_semantics(rng):
    w = make_kep_weight(rng, 4, 3, 3, 3)
    w[:, 1] = 0  # input channel 1 is pruned away: the sparse kernel never reads it
    fmt = ks.pack(w, "pattern")
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    for _ in range(3):
        ks.conv2d(x, fmt, padding=1, backend="auto")
    x[0, 1, 2, 2] = np.nan
    with np.errstate(invalid="ignore"):
        y = ks.conv2d(x, fmt, padding=1, backend="auto")
    assert np.array_equal(np.isnan(y), np.isnan(torch_conv2d(x, w, padding=1)))
    assert np.isnan(y).any()
