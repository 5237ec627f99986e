"""The fused epilogue y = act(conv(x) + bias + residual) (a ResNet block's Conv -> Add ->
Relu in one kernel call), for every registered kernel through ``conv.run_prepared``:
kernels with ``fuses_residual`` do it in the kernel, the others get the add done after.
Both must equal the unfused ops bit for bit, and the reference to within rounding."""
from __future__ import annotations

import numpy as np
import pytest

import kepsparse as ks
from kepsparse.conv import prepared_for, run_prepared
from kepsparse.geometry import ConvGeometry
from kepsparse.kernels import all_kernels, get
from kepsparse.testing import make_kep_weight, random_sparse_weight

KERNELS = [k.name for k in all_kernels()]

# (weight maker, geometry, input hw, batch): row tails that are not a multiple of any vector
# width, output wider than a tile, strided
SHAPES = [
    (lambda r: make_kep_weight(r, 16, 8, 3, 3), dict(stride=1, padding=1), (13, 11), 2),
    (lambda r: random_sparse_weight(r, (5, 3, 3, 3), 0.6), dict(stride=2, padding=1), (9, 21), 1),
    (lambda r: random_sparse_weight(r, (7, 4, 1, 1), 0.5), dict(stride=1, padding=0), (3, 37), 1),
]


@pytest.mark.parametrize("kernel_name", KERNELS)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_residual_epilogue_equals_unfused_ops(kernel_name, relu, shape):
    kernel = get(kernel_name)
    make_w, geo_kw, hw, n = SHAPES[shape]
    rng = np.random.default_rng(shape)
    w = make_w(rng)
    geo = ConvGeometry.make(**geo_kw)
    x = rng.standard_normal((n, w.shape[1], *hw)).astype(np.float32)
    bias = rng.standard_normal(w.shape[0]).astype(np.float32)
    Ho, Wo = geo.output_size(hw[0], hw[1], w.shape[2], w.shape[3])
    res = rng.standard_normal((n, w.shape[0], Ho, Wo)).astype(np.float32)
    res_before = res.copy()
    for fmt_name in kernel.formats:
        fmt = ks.pack(w, fmt_name)
        prepared = prepared_for(fmt, kernel)
        plain = run_prepared(kernel, prepared, fmt, x, bias, geo, False, None)
        unfused = plain + res
        if relu:
            unfused = np.maximum(unfused, np.float32(0))
        fused = run_prepared(kernel, prepared, fmt, x, bias, geo, relu, None, residual=res)
        assert fused.shape == unfused.shape and fused.dtype == np.float32
        np.testing.assert_array_equal(fused, unfused, err_msg=f"{kernel_name} {fmt_name}")
        ref = ks.conv2d(x, w, bias, backend="reference", **geo_kw) + res
        if relu:
            ref = np.maximum(ref, 0)
        np.testing.assert_allclose(fused, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(res, res_before)  # the residual is read, never written


def test_cpp_rejects_a_residual_of_the_wrong_shape():
    kernel = next((get(k) for k in KERNELS if get(k).backend == "cpp"), None)
    if kernel is None:
        pytest.skip("no cpp kernel on this machine")
    rng = np.random.default_rng(0)
    w = random_sparse_weight(rng, (4, 3, 3, 3), 0.5)
    fmt = ks.pack(w, kernel.formats[0])
    geo = ConvGeometry.make(1, 1)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    for bad in [np.zeros((1, 4, 8, 7), np.float32), np.zeros((2, 4, 8, 8), np.float32),
                np.zeros((4, 8, 8), np.float32)]:
        with pytest.raises(ValueError, match="residual"):
            kernel.run(prepared_for(fmt, kernel), x, None, geo, True, None, residual=bad)


def test_nonfinite_input_with_residual_runs_dense_semantics():
    """A NaN under a pruned weight still reaches the output (dense semantics), with the
    residual added afterwards as usual."""
    w = np.zeros((2, 1, 3, 3), np.float32)
    w[:, 0, 1, 1] = 1.0
    x = np.ones((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 0] = np.nan
    res = np.ones((1, 2, 4, 4), np.float32)
    for name in KERNELS:
        k = get(name)
        for fmt_name in k.formats:
            fmt = ks.pack(w, fmt_name)
            y = run_prepared(k, prepared_for(fmt, k), fmt, x, None, ConvGeometry.make(1, 1), True,
                             None, residual=res)
            assert np.isnan(y[0, :, 0, 0]).all() and np.isnan(y[0, :, 1, 1]).all(), name
            assert (y[0, :, 3, 3] == 2.0).all(), name
