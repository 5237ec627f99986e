"""MaxPool: the C++ loop (float32) against the NumPy path and torch, over geometries with
padding, ceil mode, dilation and strides, and with NaN/-inf inputs; GlobalAveragePool against
x.mean."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from kepsparse.runtime import ops

pytestmark = pytest.mark.skipif(ops._core_max_pool2d is None, reason="no C++ extension")


def _numpy_max_pool(a, x):
    (Ho, Wo), pads, spans = ops.pool_geometry(a, x.shape[2], x.shape[3])
    xp, _ = ops._padded(x, pads, spans, a, Ho, Wo, -np.inf)
    return ops._separable(xp, a, Ho, Wo, np.maximum)


GEOMETRIES = [dict(kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p], ceil_mode=c)
              for k, s, p, c in itertools.product((1, 2, 3), (1, 2, 3), (0, 1), (0, 1)) if p < k]
GEOMETRIES += [dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 0, 1], dilations=[2, 1]),
               dict(kernel_shape=[2, 3], strides=[1, 3], pads=[0, 1, 1, 2], dilations=[1, 2],
                    ceil_mode=1)]


@pytest.mark.parametrize("a", GEOMETRIES, ids=lambda a: str(sorted(a.items())).replace(" ", ""))
def test_cpp_max_pool_equals_numpy(a):
    rng = np.random.default_rng(0)
    # 70 and 37 columns: the vector loops (16 and 8 lanes) and their tails
    for shape, bad in itertools.product([(2, 3, 9, 11), (1, 2, 1, 5), (1, 1, 7, 1),
                                         (1, 2, 6, 70), (1, 1, 5, 37)], (False, True)):
        x = rng.standard_normal(shape).astype(np.float32)
        if bad:  # NaN and infinities where vector lanes, tails and borders read them
            flat = x.reshape(-1)
            for i, v in zip(rng.choice(flat.size, min(6, flat.size), replace=False),
                            (np.nan, np.inf, -np.inf, np.nan, np.inf, np.nan)):
                flat[i] = v
        try:
            expected = _numpy_max_pool(a, x)
        except ValueError:
            continue  # window larger than the padded input: refused on both paths
        y = ops.max_pool(a, [x])
        assert y.dtype == np.float32
        np.testing.assert_array_equal(y, expected)


def test_nan_and_infinities_propagate_like_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((1, 2, 8, 8)).astype(np.float32)
    x[0, 0, 3, 3] = np.nan
    x[0, 1, 0, 0] = -np.inf
    x[0, 1, 5, 6] = np.inf
    a = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    y = ops.max_pool(a, [x])
    ref = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, 1).numpy()
    np.testing.assert_array_equal(y, ref)
    assert np.isnan(y[0, 0, 1:3, 1:3]).all()


def test_non_float32_keeps_the_numpy_path():
    x = np.arange(2 * 5 * 5, dtype=np.int32).reshape(1, 2, 5, 5)
    y = ops.max_pool(dict(kernel_shape=[2, 2], strides=[2, 2]), [x])
    assert y.dtype == np.int32 and y[0, 0, 0, 0] == 6


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threaded_max_pool_is_identical(threads):
    """Large enough to be split over threads (bands of output rows, odd counts)."""
    x = np.random.default_rng(2).standard_normal((2, 13, 112, 111)).astype(np.float32)
    a = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    y = ops.max_pool(a, [x], threads=threads)
    np.testing.assert_array_equal(y, _numpy_max_pool(a, x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(1, 64, 8, 8), (3, 7, 13, 1), (2, 3, 100, 90), (2, 4, 5)])
def test_global_average_pool_gives_the_bits_of_mean(dtype, shape):
    """GlobalAveragePool's sum-then-divide equals x.mean bit for bit (and keeps the dtype)."""
    x = (np.random.default_rng(3).standard_normal(shape) * 10).astype(dtype)
    y = ops.global_average_pool({}, [x])
    expected = x.mean(axis=tuple(range(2, x.ndim)), keepdims=True).astype(dtype)
    assert y.dtype == dtype and y.shape == expected.shape
    np.testing.assert_array_equal(y, expected)


_BOTH_LOOPS = r"""
import sys
import numpy as np
from kepsparse.runtime import ops
sys.path.insert(0, {tests!r})
from test_maxpool import GEOMETRIES
rng = np.random.default_rng(4)
out = []
for a in GEOMETRIES:
    for shape in [(1, 2, 9, 70), (1, 1, 6, 37), (2, 3, 112, 111)]:
        x = rng.standard_normal(shape).astype(np.float32)
        flat = x.reshape(-1)
        flat[rng.choice(flat.size, 8, replace=False)] = [np.nan, np.inf, -np.inf, 0.0, -0.0,
                                                         np.nan, -0.0, 0.0]
        # windows whose maximum is a zero of either sign: which one is kept must match too
        z = -np.abs(rng.standard_normal(shape)).astype(np.float32)
        z[rng.random(shape) < 0.4] = 0.0
        z[rng.random(shape) < 0.2] = -0.0
        for v in (x, z):
            try:
                out.append(ops.max_pool(a, [v], threads=2).view(np.uint32))
            except ValueError:
                out.append(None)
np.savez({path!r}, *[o if o is not None else np.zeros(0, np.uint32) for o in out])
"""


def test_vector_and_portable_loops_give_the_same_bits(tmp_path):
    """On an AVX-512 CPU, column strides 1 and 2 run max_pool_plane_avx512; the portable loop
    (KEPSPARSE_POOL_GENERIC=1, what other CPUs run) must give the same bits, NaN payloads and
    the signs of zeros included. Each loop runs in its own process (the switch is read once)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from kepsparse.kernels.cpp import _features
    if not _features().get("avx512f"):
        pytest.skip("only an AVX-512 CPU has two loops to compare")
    results = []
    for generic in (False, True):
        path = tmp_path / f"y_{int(generic)}.npz"
        env = dict(os.environ)
        env.pop("KEPSPARSE_POOL_GENERIC", None)
        if generic:
            env["KEPSPARSE_POOL_GENERIC"] = "1"
        code = _BOTH_LOOPS.format(tests=str(Path(__file__).parent), path=str(path))
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
        with np.load(path) as f:
            results.append([f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))])
    assert len(results[0]) == len(results[1]) > 0
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
