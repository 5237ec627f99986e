"""The runtime's boundary: the .kep file's kernel-choice cache is untrusted (a bad entry is
dropped, never an AttributeError), threads/backend are checked, NaN/Inf inputs keep dense
semantics through the graph and the torch drop-in, and the ONNX importer refuses malformed
Conv attributes and oversized constant folds by node name."""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

import kepsparse as ks
from kepsparse.kernels import registry
from kepsparse.runtime.engine import _valid_choice
from kepsparse.testing import make_kep_weight

from .conftest import assert_matches_ort, ort_session
from .test_graph_model import _graph, _vi, conv_bn_relu_model

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402


@pytest.fixture
def model(rng):
    return ks.convert(conv_bn_relu_model(rng)[0])


def _mismatched_kernel(fmt: str) -> str:
    """An available kernel that does not run ``fmt`` (e.g. a pattern kernel on dense)."""
    return next(k.name for k in registry.all_kernels() if fmt not in k.formats)


def _garbage_choices(m):
    fmts = {name: layer.weight.name for name, layer in m.layers.items()}
    mismatched = {name: {"impl": "kernel", "kernel": _mismatched_kernel(f), "weight": "sparse"}
                  for name, f in fmts.items()}
    # a kernel of the dense format asked to run the sparse weight (conv1 is not dense)
    dense_k = next(k.name for k in registry.all_kernels() if k.formats == ("dense",))
    good = {"impl": "kernel", "kernel": dense_k, "weight": "dense"}
    return [
        "garbage", [1, 2, 3], 42, {"layers": "oops"}, {"layers": [1]},
        {"layers": {"conv1": "x", "conv2": 5}},
        {"layers": mismatched},
        {"layers": {"conv1": {"impl": "kernel", "kernel": dense_k, "weight": "sparse"}}},
        {"layers": {"conv1": {"impl": "kernel", "kernel": "no_such_kernel"}}},
        {"layers": {"conv1": {"impl": "kernel", "kernel": ["a", "b"]}}},
        {"layers": {"conv1": {"impl": "kernel"}}},
        {"layers": {"conv1": {"impl": "magic"}, "conv2": {}}},
        {"layers": {"conv1": {**good, "weight": "diagonal"}}},
        *({"layers": {"conv1": {**good, "threads": t}, "conv2": {"impl": "numpy_dense_blas",
                                                                  "threads": t}}}
          for t in (0, -3, "2", 1.5, True, None, [1])),
    ]


def test_garbage_kernel_choice_in_file_is_dropped(model, rng, tmp_path):
    x = rng.standard_normal((2, 4, 10, 10)).astype(np.float32)
    want_kernels = model.describe_kernels()
    want = model(x)
    for i, kc in enumerate(_garbage_choices(model)):
        model.metadata["kernel_choice"] = kc
        path = tmp_path / f"m{i}.kep"
        ks.save(model, path)
        m = ks.load(path)
        assert m.metadata["kernel_choice"] == kc
        assert m.describe_kernels() == want_kernels, kc  # the default choice
        np.testing.assert_array_equal(m(x), want)


def test_valid_kernel_choice_is_used(model, rng, tmp_path):
    dense_k = next(k.name for k in registry.all_kernels() if k.formats == ("dense",))
    model.metadata["kernel_choice"] = {"layers": {
        "conv1": {"impl": "kernel", "kernel": dense_k, "weight": "dense", "threads": 1},
        "conv2": {"impl": "numpy_dense_blas", "ms": 0.1}}}
    ks.save(model, tmp_path / "m.kep")
    m = ks.load(tmp_path / "m.kep")
    assert m.describe_kernels() == {"conv1": f"{dense_k}[dense]@1t",
                                    "conv2": "numpy_dense_blas"}
    x = rng.standard_normal((1, 4, 10, 10)).astype(np.float32)
    np.testing.assert_allclose(m(x), model(x, backend="dense"), rtol=1e-4, atol=1e-5)


def test_valid_choice_rules(model):
    conv1, conv2 = model["conv1"], model["conv2"]  # pattern, dense
    pat = next(k.name for k in registry.all_kernels() if k.formats == ("pattern",))
    assert _valid_choice(conv1, {"impl": "kernel", "kernel": pat})
    assert _valid_choice(conv1, {"impl": "kernel", "kernel": pat, "weight": "sparse",
                                 "threads": 2})
    assert not _valid_choice(conv2, {"impl": "kernel", "kernel": pat})
    assert not _valid_choice(conv1, {"impl": "kernel", "kernel": pat, "weight": "dense"})
    assert not _valid_choice(conv1, {"impl": "kernel", "kernel": pat, "threads": 0})
    assert not _valid_choice(conv1, None)
    assert _valid_choice(conv1, {"impl": "numpy_dense_blas"})


def test_threads_and_backend_checked_at_the_boundary(model):
    x = np.zeros((1, 4, 10, 10), np.float32)
    for bad in (0, -1, "2", 1.5, True):
        with pytest.raises(ks.InputError, match="threads"):
            model(x, threads=bad)
    with pytest.raises(ks.UnsupportedError, match="backend"):
        model(x, backend=["cpp"])
    assert model(x, threads=1).shape == (1, 5)


def test_unknown_backend_on_grouped_layer_is_refused(rng):
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    n = helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=6, pads=[1, 1, 1, 1])
    m = ks.convert(_graph([n], [_vi("x", [None, 6, 7, 7])], [_vi("y", None)],
                          [numpy_helper.from_array(w, "w")]))
    x = rng.standard_normal((1, 6, 7, 7)).astype(np.float32)
    with pytest.raises(ks.UnsupportedError, match=r"dw.*backend.*unknown backend 'gpu'"):
        m(x, backend="gpu")
    ref = m(x, backend="dense")
    for backend in ("auto", "reference", "numba", "cpp"):
        if registry.backend_status().get(backend) is None:
            np.testing.assert_allclose(m(x, backend=backend), ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- NaN / Inf: dense semantics

def _assert_same_nonfinite(y, want):
    assert y.shape == want.shape
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(y), np.isneginf(want))
    fin = np.isfinite(want)
    assert np.isnan(want).any()
    np.testing.assert_allclose(y[fin], want[fin], rtol=1e-4, atol=1e-4)


def test_nan_under_pruned_channel_propagates_like_onnxruntime(rng, tmp_path):
    w = make_kep_weight(rng, 6, 4, 3, 3, keep_per_plane=3)
    w[:, 2] = 0  # input channel 2 is pruned away entirely
    b = rng.standard_normal(6).astype(np.float32)
    n = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])
    proto = _graph([n], [_vi("x", [None, 4, 8, 8])], [_vi("y", None)],
                   [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    onnx.save(proto, str(tmp_path / "m.onnx"))
    m = ks.convert(proto)
    assert m["conv"].weight.name != "dense"
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    x[0, 2, 3, 4] = np.nan  # only a pruned channel sees it
    want = ort_session(tmp_path / "m.onnx").run(None, {"x": x})[0]
    for backend in ("auto", "reference", "numba", "cpp", "dense"):
        if backend in ("numba", "cpp") and registry.backend_status()[backend] is not None:
            continue
        _assert_same_nonfinite(m(x, backend=backend), want)
    x2 = x.copy()
    x2[0, 2, 3, 4] = 0
    assert_matches_ort(m(x2), ort_session(tmp_path / "m.onnx").run(None, {"x": x2})[0])


def test_nan_under_pruned_channel_propagates_like_torch():
    torch = pytest.importorskip("torch")
    import kepsparse.torch as kt
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    with torch.no_grad():
        keep = torch.rand_like(conv.weight) < 0.3
        keep[:, 1] = False  # input channel 1 fully pruned
        conv.weight.mul_(keep)
    net = torch.nn.Sequential(conv)
    fast = kt.sparsify(net.eval(), min_sparsity=0.5)
    assert fast.kepsparse_replaced == ["0"]
    x = torch.randn(2, 4, 7, 9)
    x[1, 1, 2, 2] = float("nan")
    with torch.no_grad():
        _assert_same_nonfinite(fast(x).numpy(), net(x).numpy())


def test_torch_dropin_bad_inputs_are_input_errors():
    torch = pytest.importorskip("torch")
    import kepsparse.torch as kt
    conv = torch.nn.Conv2d(4, 6, 3)
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) < 0.3)
    layer = kt.SparseConv2d.from_conv(conv, name="c")
    with torch.no_grad():
        for bad, match in [(torch.zeros(0, 4, 5, 5), "empty dimension"),
                           (torch.zeros(4, 5, 5), "4-D"),
                           (torch.zeros(1, 3, 5, 5), "channels"),
                           (torch.zeros(1, 4, 2, 2), "smaller than"),
                           (torch.zeros(1, 4, 5, 5, dtype=torch.int64), "floating-point"),
                           (np.zeros((1, 4, 5, 5), np.float32), "torch.Tensor")]:
            with pytest.raises(ks.InputError, match=f"layer 'c'.*{match}"):
                layer(bad)
    with pytest.raises(ks.InputError, match="threads"):
        kt.SparseConv2d.from_conv(conv, threads=0)


# ---------------------------------------------------------------- ONNX importer refusals

@pytest.mark.parametrize("attrs, field", [
    ({"pads": [1, 1]}, "pads"), ({"pads": [1, 1, 1, 1, 1, 1]}, "pads"),
    ({"strides": [1]}, "strides"), ({"strides": [1, 1, 1]}, "strides"),
    ({"dilations": [2]}, "dilations"),
])
def test_conv_attribute_lengths_refused_by_node(attrs, field):
    w = numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w")
    n = helper.make_node("Conv", ["x", "w"], ["y"], name="cv", **attrs)
    with pytest.raises(ks.UnsupportedError, match=rf"cv \(Conv\).*field '{field}'.*2-D"):
        ks.convert(_graph([n], [_vi("x", [1, 2, 5, 5])], [_vi("y", None)], [w]))


def _huge_fold_cases():
    i64 = lambda v: np.array(v, np.int64)  # noqa: E731
    f32 = np.ones((2, 3), np.float32)
    yield "ConstantOfShape", [("s", i64([10 ** 6, 10 ** 6]))], {}
    yield "Expand", [("a", f32), ("s", i64([10 ** 6, 10 ** 5, 2, 3]))], {}
    yield "Tile", [("a", f32), ("s", i64([10 ** 6, 10 ** 6]))], {}
    yield "Range", [("a", i64(0)), ("b", i64(10 ** 12)), ("c", i64(1))], {}
    yield "Pad", [("a", f32), ("s", i64([10 ** 6, 0, 10 ** 6, 10 ** 6]))], {}  # by inference


@pytest.mark.parametrize("op, consts, attrs", list(_huge_fold_cases()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_oversized_constant_fold_refused_before_allocating(op, consts, attrs):
    inits = [numpy_helper.from_array(v, k) for k, v in consts]
    n = helper.make_node(op, [k for k, _ in consts], ["c"], name="big", **attrs)
    add = helper.make_node("Add", ["x", "c"], ["y"], name="add")
    proto = _graph([n, add], [_vi("x", [1])], [_vi("y", None)], inits)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ks.UnsupportedError, match=rf"big \({op}\).*'output'.*elements"):
            ks.convert(proto)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 10
    assert peak < 64 << 20, peak  # nothing close to the requested size was allocated


def test_constant_of_shape_10_to_12_elements_fails_fast():
    shape = numpy_helper.from_array(np.array([10 ** 12], np.int64), "s")
    n = helper.make_node("ConstantOfShape", ["s"], ["c"], name="cos",
                         value=numpy_helper.from_array(np.array([1.0], np.float32)))
    add = helper.make_node("Add", ["x", "c"], ["y"], name="add")
    proto = _graph([n, add], [_vi("x", [1])], [_vi("y", None)], [shape])
    t0 = time.perf_counter()
    with pytest.raises(ks.UnsupportedError, match=r"cos \(ConstantOfShape\).*1,000,000,000,000"):
        ks.convert(proto)
    assert time.perf_counter() - t0 < 5
