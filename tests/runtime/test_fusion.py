"""Conv -> Add [-> Relu] fusion in the graph runtime (``engine.fuse_residual_adds``):
which chains fuse, that the fused graph equals the unfused one bit for bit on every backend,
and that an addend of another shape (broadcast) falls back to the separate ops."""
from __future__ import annotations

import numpy as np
import pytest

import kepsparse as ks
from kepsparse.runtime.engine import FUSED_CONV_ADD, fuse_residual_adds

from .conftest import assert_matches_ort, ort_session

pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _proto(nodes, inits, x_shape, opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(a, n) for n, a in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _block(rng, residual_shape=None, conv_out_used_twice=False, relu_after=True):
    """x -> c1 (relu) -> c2 -> Add(c2, shortcut) -> Relu; shortcut = x or a constant."""
    C = 6
    w1 = rng.standard_normal((C, C, 3, 3)).astype(np.float32) * (rng.random((C, C, 3, 3)) < 0.3)
    w2 = rng.standard_normal((C, C, 3, 3)).astype(np.float32) * (rng.random((C, C, 3, 3)) < 0.3)
    inits = {"w1": w1, "w2": w2, "b2": rng.standard_normal(C).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h1"], ["a1"], name="r1"),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["h2"], name="c2", pads=[1, 1, 1, 1])]
    short = "x"
    if residual_shape is not None:
        inits["s"] = rng.standard_normal(residual_shape).astype(np.float32)
        short = "s"
    nodes.append(helper.make_node("Add", [short, "h2"], ["sum"], name="add"))
    last = "sum"
    if relu_after:
        nodes.append(helper.make_node("Relu", ["sum"], ["out"], name="r2"))
        last = "out"
    if conv_out_used_twice:
        nodes.append(helper.make_node("Mul", [last, "h2"], ["y"], name="mul"))
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"], name="id"))
    return _proto(nodes, inits, [None, C, 9, 7])


@pytest.mark.parametrize("case, fused_ops", [
    (dict(), 1),
    (dict(relu_after=False), 1),
    (dict(conv_out_used_twice=True), 0),       # h2 also feeds Mul: cannot fuse
    (dict(residual_shape=(1, 6, 1, 1)), 1),    # fused node, broadcast add falls back at run
])
def test_fusion_is_exact_and_matches_onnxruntime(case, fused_ops, tmp_path):
    rng = np.random.default_rng(3)
    proto = _block(rng, **case)
    path = tmp_path / "b.onnx"
    path.write_bytes(proto.SerializeToString())
    m = ks.convert(path)
    nodes = fuse_residual_adds(m.graph)
    assert sum(n.op == FUSED_CONV_ADD for n in nodes) == fused_ops
    if fused_ops:
        fused = next(n for n in nodes if n.op == FUSED_CONV_ADD)
        assert fused.name == "c2" and fused.attrs["act"] == ("relu" if case.get("relu_after", True) else "none")
    x = rng.standard_normal((2, 6, 9, 7)).astype(np.float32)
    y_ort = ort_session(path).run(None, {"x": x})[0]
    for backend, reason in ks.backend_status().items():
        if reason is not None:
            continue
        m.fuse_epilogues = True
        y_fused = m(x, backend=backend)
        m.fuse_epilogues = False
        y_plain = m(x, backend=backend)
        np.testing.assert_array_equal(y_fused, y_plain, err_msg=backend)
        assert_matches_ort(y_fused, y_ort)
    m.fuse_epilogues = True
    assert_matches_ort(m(x, backend="dense"), y_ort)


def test_resnet56_fuses_every_block_and_stays_exact(exported):
    _, kep, shape = exported("resnet56")
    m = ks.convert(kep)
    nodes = fuse_residual_adds(m.graph)
    assert sum(n.op == FUSED_CONV_ADD for n in nodes) == 27  # 3 stages x 9 blocks
    assert not [n for n in nodes if n.op in ("Add", "Relu")]
    x = np.random.default_rng(4).standard_normal((2, *shape)).astype(np.float32)
    capture_fused, capture_plain = {}, {}
    y_fused = m(x, threads=2, capture=capture_fused)
    m.fuse_epilogues = False
    y_plain = m(x, threads=2, capture=capture_plain)
    np.testing.assert_array_equal(y_fused, y_plain)
    assert capture_fused.keys() == capture_plain.keys()  # every layer's input still captured
    assert_matches_ort(y_fused, ort_session(kep).run(None, {"x": x})[0])
