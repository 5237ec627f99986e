"""NaN/Inf inputs propagate exactly as in dense convolution, on every backend: a sparse kernel
must not hide a NaN that sits under a pruned (zero) weight."""
from __future__ import annotations

import numpy as np
import pytest

import kepsparse as ks
from kepsparse.kernels import all_kernels
from kepsparse.testing import make_kep_weight

from .conftest import torch_conv2d


@pytest.mark.parametrize("backend", ["auto"] + [k.name for k in all_kernels()])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input_propagates_like_dense(backend, bad, rng):
    w = make_kep_weight(rng, 8, 4, 3, 3, empty_planes=0.5)
    w[:, 1] = 0  # channel 1 is pruned away entirely: a sparse kernel never reads it
    x = rng.standard_normal((2, 4, 10, 9)).astype(np.float32)
    x[0, 1, 4, 4] = bad
    x[1, 2, 0, 8] = bad
    fmt_names = ks.kernels.get(backend).formats if backend != "auto" else ("pattern", "csr")
    expected = torch_conv2d(x, w, padding=1)
    for fmt_name in fmt_names:
        with np.errstate(invalid="ignore"):
            y = ks.conv2d(x, ks.pack(w, fmt_name), padding=1, backend=backend)
        assert np.array_equal(np.isnan(y), np.isnan(expected))
        assert np.array_equal(np.isposinf(y), np.isposinf(expected))
        assert np.array_equal(np.isneginf(y), np.isneginf(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(y[finite], expected[finite], rtol=1e-4, atol=1e-5)
