"""The graph runtime's C++ step loop (``_core.StepRunner``, csrc/runner.cpp): built after a
Python run of the same input shapes, it must give exactly the Python loop's outputs
(convs, fused residual adds, NumPy ops, NaN inputs, views), raise the same located errors,
and be safe to share between threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import kepsparse as ks
from kepsparse.errors import InputError
from kepsparse.kernels import cpp
from kepsparse.runtime import ops

from .conftest import assert_matches_ort, ort_session

pytestmark = pytest.mark.skipif(cpp._core is None, reason="kepsparse._core not built")


def _python_loop(m, x, **kw):
    m.native_steps = False
    try:
        return m(x, **kw)
    finally:
        m.native_steps = True


@pytest.mark.parametrize("net", ["resnet56", "resnet18"])
def test_native_steps_equal_the_python_loop(exported, net):
    _, kep, shape = exported(net)
    m = ks.convert(kep)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    y_loop = m(x, threads=2)                      # the Python loop; builds the runner
    ((key, (slots, runner, names)),) = m._native.items()
    steps = m._compiled("auto", 2)
    assert names == [node.name for node, *_ in steps]
    cpp_convs = sum(1 for node, *_ in steps if "layer" in node.attrs
                    and (impl := m.conv_impl(node.attrs["layer"], "auto", 2)).kernel is not None
                    and impl.kernel.backend == "cpp")
    assert runner.steps == len(steps) and runner.native_steps == cpp_convs > 10
    # most convs hand their output to the next conv in its packed input layout
    packed = sum(bool(getattr(getattr(m.conv_impl(node.attrs["layer"], "auto", 2).bound[2],
                                      "call", None), "packs_output", False))
                 for node, *_ in steps if "layer" in node.attrs)
    assert packed >= cpp_convs // 2, (packed, cpp_convs)
    y_native = m(x, threads=2)                    # the C++ loop
    np.testing.assert_array_equal(y_native, y_loop)
    np.testing.assert_array_equal(_python_loop(m, x, threads=2), y_loop)
    assert_matches_ort(y_native, ort_session(kep).run(None, {"x": x})[0])
    # another batch size: a runner of its own, the first one kept
    x1 = x[:1].copy()
    np.testing.assert_array_equal(m(x1, threads=2), m(x1, threads=2))
    np.testing.assert_array_equal(m(x1, threads=2), _python_loop(m, x1, threads=2))
    assert len(m._native) == 2 and m._native[key][1] is runner


def test_native_steps_time_every_node(exported, monkeypatch):
    _, kep, shape = exported("resnet56")
    m = ks.convert(kep)
    x = np.random.default_rng(3).standard_normal((1, *shape)).astype(np.float32)
    y = m(x)  # the Python loop; builds the runner
    (native,) = m._native.values()
    seconds: list = []
    calls = []
    run = m._run_native

    def spy(native, env, timings=None):
        calls.append(timings is not None)
        return run(native, env, timings)
    monkeypatch.setattr(m, "_run_native", spy)
    t: dict = {}
    np.testing.assert_array_equal(m(x, timings=t), y)
    assert calls == [True]  # timed by the C++ loop, not the Python one
    assert set(t) == set(native[2]) == {node.name for node, *_ in m._compiled("auto", None)}
    assert len(t) == native[1].steps and all(v > 0 for v in t.values())
    rows = m.profile(x, repeats=2)
    assert {r["node"] for r in rows} == set(t) and calls[-1]
    # the runner's own list: one time per step, appended
    values = [None] * len(native[0])
    for name, v in {**m.graph.constants, "x": x}.items():
        if name in native[0]:
            values[native[0][name]] = v
    native[1].run(values, seconds)
    assert len(seconds) == native[1].steps


def test_nan_input_takes_dense_semantics_in_native_steps(exported):
    _, kep, shape = exported("resnet56")
    m = ks.convert(kep)
    x = np.random.default_rng(8).standard_normal((1, *shape)).astype(np.float32)
    m(x)
    xn = x.copy()
    xn[0, 1, 5, 7] = np.nan
    y_native = m(xn)
    assert m._native  # ran natively
    y_loop = _python_loop(m, xn)
    np.testing.assert_array_equal(np.isnan(y_native), np.isnan(y_loop))
    np.testing.assert_array_equal(y_native, y_loop)


def _conv_graph(tmp_path, nodes, weights, name="m.onnx"):
    """A small ONNX model of these nodes: input x (N, 3, 6, 6), output y."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, n) for n, w in weights.items()])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / name
    onnx.save(proto, str(path))
    return path


def test_inf_inside_the_network_takes_dense_semantics_in_native_steps(tmp_path):
    """A conv whose output overflows to Inf hands it to the next conv in its packed layout
    (no packing, so no NaN/Inf scan there): the producer's flag must send the consumer to
    dense semantics, exactly as the Python loop does (0 * Inf = NaN where weights are
    pruned). And a conv output that a NumPy step overwrites in place (Mul) is not packed:
    the flag would go stale."""
    from onnx import helper
    rng = np.random.default_rng(11)

    def sparse(shape):
        return (rng.standard_normal(shape) * (rng.random(shape) < 0.4)).astype(np.float32)
    # w1's kept weights are >= 2: one input of 3e38 makes Inf in the outputs it reaches
    w1 = sparse((4, 3, 3, 3))
    w1[w1 != 0] = 2 + np.abs(w1[w1 != 0])
    w = {"w1": w1, "w2": sparse((4, 4, 3, 3)), "w3": sparse((4, 4, 3, 3))}
    chain = _conv_graph(tmp_path, [
        helper.make_node("Conv", ["x", "w1"], ["h"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["h", "w2"], ["y"], name="c2", pads=[1, 1, 1, 1])], w,
        "chain.onnx")
    m = ks.convert(chain)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    m(x, backend="cpp")  # builds the runner
    assert len(m._native) == 1
    assert m.conv_impl("c1", "cpp").bound[2].call.packs_output
    xb = x.copy()
    xb[0, 0, 2, 2] = 3e38  # finite, but c1's outputs around it overflow
    y_native = m(xb, backend="cpp")
    y_loop = _python_loop(m, xb, backend="cpp")
    assert np.isnan(y_loop).any() and np.isfinite(y_loop).any()
    np.testing.assert_array_equal(y_native, y_loop)
    np.testing.assert_array_equal(m(x, backend="cpp"), _python_loop(m, x, backend="cpp"))

    # big makes exactly one value of h Inf: dense semantics then give NaN around it in every
    # channel of c3's output, a sparse kernel only where c3 keeps a weight
    h = np.sort(np.abs(ks.conv2d(x, w1, padding=1, backend="reference")).ravel())
    big = np.array(3.4e38 / np.sqrt(h[-1] * h[-2]), np.float32)
    inplace = _conv_graph(tmp_path, [
        helper.make_node("Conv", ["x", "w1"], ["h"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["h", "w2"], ["a"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["h", "big"], ["h2"], name="mul"),  # in place on h (dead)
        helper.make_node("Conv", ["h2", "w3"], ["b"], name="c3", pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["a", "b"], ["y"], name="cat", axis=1)],
        {**w, "big": big}, "inplace.onnx")
    m = ks.convert(inplace)
    with np.errstate(over="ignore", invalid="ignore"):  # h * big overflows: meant to
        m(x, backend="cpp")
        assert not m.conv_impl("c1", "cpp").bound[2].call.packs_output
        y_loop = _python_loop(m, x, backend="cpp")
        assert np.isnan(y_loop).any() and np.isfinite(y_loop).any()
        np.testing.assert_array_equal(m(x, backend="cpp"), y_loop)


def test_a_failing_step_is_located_in_native_steps(tmp_path, monkeypatch):
    """A NumPy op failing inside the C++ loop raises the Python loop's InputError, naming
    the node; the failing call leaves the model usable."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(9)
    w = (rng.standard_normal((4, 3, 3, 3)) * (rng.random((4, 3, 3, 3)) < 0.4)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["h"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Sigmoid", ["h"], ["y"], name="sig")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    calls = []
    real = ops.FUNCS["Sigmoid"]

    def flaky(a, xs, reuse):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("boom")
        return real(a, xs, reuse)
    monkeypatch.setitem(ops.FUNCS, "Sigmoid", flaky)
    m = ks.convert(path)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    y = m(x, backend="cpp")
    assert m._native
    with pytest.raises(InputError, match="Sigmoid: boom") as err:
        m(x, backend="cpp")
    assert err.value.layer == "sig"
    np.testing.assert_array_equal(m(x, backend="cpp"), y)


def test_native_steps_are_safe_to_share_between_threads(exported):
    _, kep, shape = exported("resnet56")
    m = ks.convert(kep)
    rng = np.random.default_rng(10)
    xs = [rng.standard_normal((1, *shape)).astype(np.float32) for _ in range(4)]
    want = [_python_loop(m, x, threads=1) for x in xs]
    m(xs[0], threads=1)  # builds the runner
    errors = []

    def work(k):
        try:
            for _ in range(5):
                for i in range(k % 2, len(xs), 1):
                    np.testing.assert_array_equal(m(xs[i], threads=1), want[i])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_step_runner_rejects_malformed_steps_without_crashing():
    """The runner is internal, but its inputs are Python objects: wrong shapes of steps or
    slots out of range raise, never crash."""
    StepRunner = cpp._core.StepRunner
    ident = lambda xs, capture: xs[0]  # noqa: E731
    with pytest.raises(ValueError, match="a step is"):
        StepRunner([(ident, [0], 1)])
    with pytest.raises(ValueError, match="conv is"):
        StepRunner([(ident, [0], 1, [], (None, (1, 1, 1, 1)))])
    with pytest.raises((TypeError, RuntimeError)):
        StepRunner([(ident, [0], 1, [], ("not a call", (1, 1, 1, 1), (1, 1, 1, 1), True))])
    r = StepRunner([(ident, [0], 1, [0], None)])
    slots = ["a", None]
    r.run(slots)
    assert slots == [None, "a"]  # output written, the dead input cleared
    with pytest.raises(IndexError):
        StepRunner([(ident, [0], 5, [], None)]).run(["a"])
    slots = ["a"]
    StepRunner([(lambda xs, capture: xs, [-1], 0, [], None)]).run(slots)  # -1: absent input
    assert slots == [[None]]
