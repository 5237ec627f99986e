"""Numba-backend specifics beyond the registry-driven edge cases (test_registered_kernels.py):
thread-count independence, a layer large enough to span several accumulator chunks and
tasks, inputs that are not float32/contiguous at the kernel boundary, the threads context,
lazy compilation, the on-disk compile cache across processes, and the no-numba fallback."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import kepsparse as ks
from kepsparse.errors import BackendUnavailableError, InputError
from kepsparse.geometry import ConvGeometry
from kepsparse.kernels import get
from kepsparse.testing import make_kep_weight, random_sparse_weight

numba = pytest.importorskip("numba")
nk = pytest.importorskip("kepsparse.kernels.numba_kernels")

NUMBA_KERNELS = ["pattern_f32_numba", "csr_f32_numba", "dense_f32_numba"]


def _run(kernel_name, w, x, bias=None, threads=None, relu=False, **geo):
    kernel = get(kernel_name)
    fmt = ks.pack(w, kernel.formats[0])
    return kernel.run(kernel.prepare(fmt), x, bias, ConvGeometry.make(**geo), relu, threads)


def _reference(w, x, bias=None, relu=False, **geo):
    ref = get("any_f32_ref")
    fmt = ks.pack(w, "csr")
    return ref.run(ref.prepare(fmt), x, bias, ConvGeometry.make(**geo), relu, None)


@pytest.mark.parametrize("kernel_name", ["pattern_f32_numba", "csr_f32_numba"])
@pytest.mark.parametrize("stride", [1, 2])
def test_threads_1_and_2_bitwise_identical(kernel_name, stride, rng):
    w = make_kep_weight(rng, 40, 24, 3, 3, keep_per_plane=4, empty_planes=0.5)
    x = rng.standard_normal((2, 24, 37, 33)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    y1 = _run(kernel_name, w, x, b, threads=1, stride=stride, padding=1)
    y2 = _run(kernel_name, w, x, b, threads=2, stride=stride, padding=1)
    yd = _run(kernel_name, w, x, b, threads=None, stride=stride, padding=1)
    assert np.array_equal(y1, y2) and np.array_equal(y1, yd)


@pytest.mark.parametrize("kernel_name", ["pattern_f32_numba", "csr_f32_numba"])
def test_larger_layer_matches_reference(kernel_name, rng):
    # 90 % KEP sparsity; 58x58 wide planes span several 1024-float chunks; batch 3
    w = make_kep_weight(rng, 72, 64, 3, 3, keep_per_plane=4, empty_planes=0.775)
    x = rng.standard_normal((3, 64, 56, 56)).astype(np.float32)
    b = rng.standard_normal(72).astype(np.float32)
    y = _run(kernel_name, w, x, b, threads=2, relu=True, padding=1)
    np.testing.assert_allclose(y, _reference(w, x, b, relu=True, padding=1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("geo", [
    dict(stride=2, padding=(0, 2, 1, 3), dilation=(2, 1), groups=4),
    dict(stride=(3, 1), padding=(2, 1), dilation=2, groups=1),
    dict(stride=1, padding=3, dilation=3, groups=2),
], ids=["s2-asym-pad-dil21-g4", "s31-dil2", "dil3-g2"])
def test_geometry_on_larger_input(geo, rng):
    w = random_sparse_weight(rng, (24, 32 // geo["groups"], 5, 3), 0.8)
    x = rng.standard_normal((2, 32, 45, 41)).astype(np.float32)
    y = _run("csr_f32_numba", w, x, None, **geo)
    np.testing.assert_allclose(y, _reference(w, x, None, **geo), rtol=1e-4, atol=1e-4)


def test_dense_kernel_matches_reference(rng):
    w = random_sparse_weight(rng, (20, 12, 3, 3), 0.3)
    x = rng.standard_normal((1, 12, 30, 31)).astype(np.float32)
    y = _run("dense_f32_numba", w, x, None, padding=1)
    np.testing.assert_allclose(y, _reference(w, x, None, padding=1), rtol=1e-4, atol=1e-4)


def test_non_contiguous_and_float64_input(rng):
    w = make_kep_weight(rng, 16, 8, 3, 3)
    base = rng.standard_normal((2, 8, 30, 40))
    x64 = base[:, :, ::2, ::2]                        # float64, strided
    x_nhwc = np.ascontiguousarray(base.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    expected = _reference(w, np.ascontiguousarray(x64, np.float32), padding=1)
    fmt = ks.pack(w, "pattern")
    x32 = np.empty((2, 8, 15, 40), np.float32)[..., ::2]  # float32, strided
    x32[...] = x64
    for x in (x64, x32):  # at the kernel itself and through conv2d
        assert not x.flags.c_contiguous
        np.testing.assert_allclose(_run("pattern_f32_numba", w, x, padding=1), expected,
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ks.conv2d(x, fmt, padding=1, backend="pattern_f32_numba"),
                                   expected, rtol=1e-4, atol=1e-5)
    y = ks.conv2d(x_nhwc, fmt, padding=1, backend="pattern_f32_numba")
    np.testing.assert_allclose(y, _reference(w, base.astype(np.float32), padding=1),
                               rtol=1e-4, atol=1e-5)


def test_threads_context_restores_and_validates(rng):
    w = make_kep_weight(rng, 8, 4, 3, 3)
    x = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
    before = numba.get_num_threads()
    expected = _run("csr_f32_numba", w, x, threads=1, padding=1)
    assert numba.get_num_threads() == before
    # more threads than numba's pool: clamped to the pool, same numbers
    assert np.array_equal(_run("csr_f32_numba", w, x, threads=10_000, padding=1), expected)
    assert numba.get_num_threads() == before
    with pytest.raises(InputError, match="threads"):
        _run("csr_f32_numba", w, x, threads=0, padding=1)
    assert numba.get_num_threads() == before


def _python(code: str, **env) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_compiles_nothing_and_cache_is_reused_across_processes(tmp_path):
    code = """
import numpy as np
import kepsparse as ks
from kepsparse.kernels import numba_kernels as nk
assert nk._conv_blocked.signatures == [] and nk._pack_input.signatures == []  # lazy
w = np.zeros((4, 3, 3, 3), np.float32); w[1, 2, 0, 1] = 2.0
y = ks.conv2d(np.ones((1, 3, 6, 6), np.float32), ks.pack(w, "csr"), padding=1,
              backend="csr_f32_numba")
assert y[0, 1, 2, 2] == 2.0 and y[0, 0].max() == 0.0
print(sum(nk._conv_blocked.stats.cache_hits.values()),
      sum(nk._conv_blocked.stats.cache_misses.values()))
"""
    cache = str(tmp_path / "numba_cache")
    assert _python(code, NUMBA_CACHE_DIR=cache).split() == ["0", "1"]  # compiled, saved
    assert _python(code, NUMBA_CACHE_DIR=cache).split() == ["1", "0"]  # loaded from disk


def test_without_numba_kernels_register_but_are_unavailable():
    code = """
import sys
sys.modules["numba"] = None  # import numba now fails
import numpy as np
import kepsparse as ks
from kepsparse.errors import BackendUnavailableError
from kepsparse.kernels import all_kernels, get
names = {k.name for k in all_kernels(include_unavailable=True)}
assert {"pattern_f32_numba", "csr_f32_numba", "dense_f32_numba"} <= names
assert "numba" in get("csr_f32_numba").unavailable_reason()
assert "csr_f32_numba" not in {k.name for k in all_kernels()}
try:
    ks.conv2d(np.ones((1, 2, 5, 5), np.float32), ks.pack(np.ones((2, 2, 3, 3), np.float32), "csr"),
              backend="numba")
except BackendUnavailableError as exc:
    print("unavailable:", exc)
"""
    assert "unavailable:" in _python(code)
