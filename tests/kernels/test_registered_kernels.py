"""Every registered kernel, every format it runs, over the edge-case set: equal to the
reference (the oracle) and to torch.nn.functional.conv2d (the judge).

Adding a kernel to the registry adds it here; no new test code."""
from __future__ import annotations

import numpy as np
import pytest

import kepsparse as ks
from kepsparse.kernels import all_kernels, get
from kepsparse.testing import case_id, conv_cases, edge_case_weights

from ..conftest import torch_conv2d

KERNELS = [k.name for k in all_kernels()]
CASES = list(conv_cases())
WEIGHTS = list(edge_case_weights())


def _fits(w, case):
    H, W = case["hw"]
    pad = case["padding"]
    pads = (pad, pad, pad, pad) if isinstance(pad, int) else (
        pad if len(pad) == 4 else (pad[0], pad[0], pad[1], pad[1]))
    dil = case["dilation"] if isinstance(case["dilation"], tuple) else (case["dilation"],) * 2
    return (H + pads[0] + pads[1] >= dil[0] * (w.shape[2] - 1) + 1 and
            W + pads[2] + pads[3] >= dil[1] * (w.shape[3] - 1) + 1)


def test_registry_has_reference():
    assert "any_f32_ref" in KERNELS


@pytest.mark.parametrize("kernel_name", KERNELS)
@pytest.mark.parametrize("label,w", WEIGHTS, ids=[lbl for lbl, _ in WEIGHTS])
def test_kernel_matches_reference_and_torch(kernel_name, label, w):
    kernel = get(kernel_name)
    rng = np.random.default_rng(7)
    bias = rng.standard_normal(w.shape[0]).astype(np.float32)
    checked = 0
    for case in CASES:
        if not _fits(w, case):
            continue
        x = rng.standard_normal((case["batch"], w.shape[1], *case["hw"])).astype(np.float32)
        geo = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"])
        expected = torch_conv2d(x, w, bias, **geo)
        for fmt_name in kernel.formats:
            fmt = ks.pack(w, fmt_name)
            y_ref = ks.conv2d(x, fmt, bias, backend="reference", **geo)
            y = ks.conv2d(x, fmt, bias, backend=kernel_name, **geo)
            assert y.dtype == np.float32 and y.shape == expected.shape, case_id(case)
            np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-5,
                                       err_msg=f"{kernel_name} {fmt_name} vs reference {case_id(case)}")
            np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5,
                                       err_msg=f"{kernel_name} {fmt_name} vs torch {case_id(case)}")
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("kernel_name", KERNELS)
def test_kernel_fused_relu_and_no_bias(kernel_name, rng):
    kernel = get(kernel_name)
    w = ks.testing.make_kep_weight(rng, 10, 6, 3, 3)
    x = rng.standard_normal((2, 6, 15, 14)).astype(np.float32)
    expected = np.maximum(torch_conv2d(x, w, None, stride=2, padding=1), 0)
    for fmt_name in kernel.formats:
        y = ks.conv2d(x, ks.pack(w, fmt_name), None, stride=2, padding=1, backend=kernel_name,
                      relu=True)
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel_name", [k.name for k in all_kernels() if k.supports_groups])
def test_kernel_groups(kernel_name, rng):
    kernel = get(kernel_name)
    w = ks.testing.random_sparse_weight(rng, (8, 3, 3, 3), 0.5)
    x = rng.standard_normal((1, 6, 9, 8)).astype(np.float32)
    expected = torch_conv2d(x, w, None, padding=1, groups=2)
    for fmt_name in kernel.formats:
        y = ks.conv2d(x, ks.pack(w, fmt_name), None, padding=1, groups=2, backend=kernel_name)
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel_name", KERNELS)
def test_bound_kernel_equals_run(kernel_name, rng):
    """conv.bind_prepared (the network runtime's per-shape call) gives exactly run_prepared's
    output, with ReLU and a residual, and the dense fallback for a NaN input."""
    from kepsparse.conv import bind_prepared, prepared_for, run_prepared
    from kepsparse.geometry import ConvGeometry
    kernel = get(kernel_name)
    w = ks.testing.make_kep_weight(rng, 10, 6, 3, 3)
    bias = rng.standard_normal(10).astype(np.float32)
    geo = ConvGeometry.make(2, 1)
    x = rng.standard_normal((2, 6, 15, 14)).astype(np.float32)
    r = rng.standard_normal((2, 10, 8, 7)).astype(np.float32)
    for fmt_name in kernel.formats:
        fmt = ks.pack(w, fmt_name)
        prepared = prepared_for(fmt, kernel)
        bound = bind_prepared(kernel, prepared, fmt, x.shape, bias, geo, None)
        for relu, res in ((False, None), (True, r)):
            want = run_prepared(kernel, prepared, fmt, x, bias, geo, relu, None, res)
            np.testing.assert_array_equal(bound(x, relu, res), want)
        xn = x.copy()
        xn[1, 3, 2, 2] = np.nan
        np.testing.assert_array_equal(np.isnan(bound(xn, False)),
                                      np.isnan(run_prepared(kernel, prepared, fmt, xn, bias, geo,
                                                            False, None)))
