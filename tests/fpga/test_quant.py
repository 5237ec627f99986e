"""The integer golden model: its definition, and its error against the float layer."""
from __future__ import annotations

import numpy as np
import pytest

from kepsparse.errors import UnsupportedError
from kepsparse.formats import pack
from kepsparse.fpga.quant import (quantize_activations, quantize_layer, quantize_multiplier,
                                  requantize)
from kepsparse.geometry import ConvGeometry
from kepsparse.testing import make_kep_weight

from .conftest import CONFIGS, make_model


@pytest.mark.parametrize("name", list(CONFIGS))
def test_golden_within_quantization_error_bound(name):
    model, cal = make_model(name)
    layer = model[name]
    q = quantize_layer(name, layer.weight, layer.bias, layer.geometry, cal,
                       relu=CONFIGS[name]["relu"])
    report = q.error_report(cal)
    assert report["within_bound"], report
    # int8 on both sides: a few percent of the output range at most
    assert report["max_error_over_range"] < 0.05, report
    assert report["snr_db"] > 25, report


@pytest.mark.parametrize("stride,padding,relu", [(1, 0, False), (2, 1, True), ((1, 2), (0, 1, 2, 1), False)])
def test_golden_vs_float_random_inputs(rng, stride, padding, relu):
    w = make_kep_weight(rng, 8, 6, 3, 3)
    w[3] = 0
    bias = rng.standard_normal(8).astype(np.float32)
    geometry = ConvGeometry.make(stride, padding)
    cal = rng.standard_normal((8, 6, 10, 9)).astype(np.float32)
    q = quantize_layer("l", pack(w, "pattern"), bias, geometry, cal, relu=relu)
    x = rng.standard_normal((2, 6, 10, 9)).astype(np.float32) * 0.8  # inside the calibrated range
    r = q.error_report(x)
    assert r["within_bound"], r


def test_accumulator_is_the_exact_integer_conv(rng):
    w = make_kep_weight(rng, 5, 4, 3, 3)
    cal = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)
    q = quantize_layer("l", pack(w, "csr"), None, ConvGeometry.make(2, 1), cal)
    xq = q.quantize_input(cal)
    acc = q.accumulate(xq).astype(np.int64)
    # the same sum in float64 through the float reference backend (exact for these magnitudes)
    from kepsparse.kernels import reference
    fmt = pack(q.int_weight().astype(np.float32), "dense")
    ref = reference.run(reference.prepare(fmt), xq.astype(np.float32), None, q.geometry)
    np.testing.assert_array_equal(acc, ref.astype(np.int64))
    assert q.weight.name == "pattern"          # hardware layout: KEP's pattern format
    assert q.int_weight().dtype == np.int8 and np.abs(q.int_weight()).max() <= 127


def test_requantize_rounds_half_up_and_saturates():
    acc = np.array([5, 6, 7, -5, -6, -7, 10**6, -10**6], np.int32).reshape(1, 1, 1, 8)
    mult = np.array([1 << 30], np.int32)      # 0.5 with shift 31
    shift = np.array([31], np.int32)
    y = requantize(acc, mult, shift, relu=False).reshape(-1)
    # x * 0.5 rounded half toward +inf: 2.5->3, 3->3, 3.5->4, -2.5->-2, -3->-3, -3.5->-3
    assert y.tolist() == [3, 3, 4, -2, -3, -3, 127, -128]
    y = requantize(acc, mult, shift, relu=True).reshape(-1)
    assert y.tolist() == [3, 3, 4, 0, 0, 0, 127, 0]


@pytest.mark.parametrize("m", [1e-6, 3.7e-4, 0.0123, 0.5, 0.99999, 1.0, 7.25])
def test_quantize_multiplier(m):
    M, n = quantize_multiplier(m)
    assert 1 <= n <= 62 and 0 < M < 2**31
    assert abs(M * 2.0**-n - m) <= m * 2**-29


def test_activation_quantization_saturates():
    x = np.array([-3.0, -1.0, 0.0, 0.004, 1.0, 3.0])
    assert quantize_activations(x, 1 / 127).tolist() == [-127, -127, 0, 1, 127, 127]


def test_accumulator_overflow_is_refused(rng):
    w = np.ones((1, 16384, 3, 3), np.float32)  # 147456 * 127 * 127 > 2**31
    cal = rng.standard_normal((1, 16384, 3, 3)).astype(np.float32)
    with pytest.raises(UnsupportedError, match="int32 accumulator"):
        quantize_layer("big", pack(w, "dense"), None, ConvGeometry.make(1, 0), cal)
