"""Graph import (BN folding, fusion, refusals), the .kep v2 file with a graph (round trip,
validation on load, version-1 files), the run/tune commands, and torch-free loading."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import kepsparse as ks
from kepsparse.cli import main
from kepsparse.testing import make_kep_weight

from .conftest import assert_matches_ort, ort_session

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def conv_bn_relu_model(rng, opset=17):
    """x -> Conv(KEP weight, bias) -> BN -> Relu -> Conv(dense) -> Clip(0,6) -> Add(skip)
    -> MaxPool -> GlobalAveragePool -> Flatten -> Gemm -> Softmax."""
    w1 = make_kep_weight(rng, 8, 4, 3, 3, keep_per_plane=3)
    w2 = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2
    inits = {
        "w1": w1, "b1": rng.standard_normal(8).astype(np.float32),
        "g": (0.5 + rng.random(8)).astype(np.float32), "be": rng.standard_normal(8).astype(np.float32),
        "mu": rng.standard_normal(8).astype(np.float32), "var": (0.5 + rng.random(8)).astype(np.float32),
        "w2": w2, "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
        "fc": rng.standard_normal((5, 8)).astype(np.float32), "fcb": np.zeros(5, np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "be", "mu", "var"], ["n1"], name="bn1",
                         epsilon=1e-3),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="clip2"),
        helper.make_node("Add", ["r2", "r1"], ["s"], name="add"),
        helper.make_node("MaxPool", ["s"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["gp"], name="gap"),
        helper.make_node("Flatten", ["gp"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["l"], name="fc", transB=1),
        helper.make_node("Softmax", ["l"], ["y"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m, w1


@pytest.fixture
def onnx_file(tmp_path, rng):
    proto, w1 = conv_bn_relu_model(rng)
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    return path, w1


def test_bn_folded_relu_clip_fused_sparsity_kept(onnx_file, rng, tmp_path):
    path, w1 = onnx_file
    m = ks.convert(path)
    ops = m.graph.op_counts()
    assert "BatchNormalization" not in ops and "Relu" not in ops and "Clip" not in ops
    acts = {n.attrs["layer"]: n.attrs.get("act") for n in m.graph.nodes if n.op == "SparseConv"}
    assert acts == {"conv1": "relu", "conv2": "clip"}
    # folding scales each filter: the kept positions are exactly the original ones
    assert np.array_equal(m["conv1"].weight.kept_mask(), w1 != 0)
    assert m["conv1"].weight.nnz == int((w1 != 0).sum())
    x = rng.standard_normal((3, 4, 10, 10)).astype(np.float32)
    assert_matches_ort(m(x), ort_session(path).run(None, {"x": x})[0])


def test_kep_file_round_trip_keeps_graph(onnx_file, rng, tmp_path):
    path, _ = onnx_file
    m = ks.convert(path)
    ks.save(m, tmp_path / "m.kep")
    m2 = ks.load(tmp_path / "m.kep")
    assert [n.to_json() for n in m2.graph.nodes] == [n.to_json() for n in m.graph.nodes]
    assert m2.graph.inputs == m.graph.inputs and m2.graph.outputs == m.graph.outputs
    x = rng.standard_normal((1, 4, 10, 10)).astype(np.float32)
    np.testing.assert_array_equal(m2(x), m(x))
    assert isinstance(m2, ks.SparseModel)  # a GraphModel is a SparseModel


def _rewrite_graph(src, dst, edit):
    """Apply ``edit`` to the JSON graph of a .kep file (the safetensors header)."""
    data = src.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    doc = json.loads(header["__metadata__"]["model"])
    edit(doc["graph"])
    header["__metadata__"]["model"] = json.dumps(doc)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    dst.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])


def _node(g, op):
    return next(n for n in g["nodes"] if n["op"] == op)


@pytest.mark.parametrize("edit, match", [
    (lambda g: _node(g, "Add")["inputs"].__setitem__(1, "nowhere"), "add.*'nowhere'.*not defined"),
    (lambda g: _node(g, "MaxPool").__setitem__("op", "Tanh"), "pool.*op type 'Tanh'"),
    (lambda g: _node(g, "MaxPool")["attrs"].__setitem__("kernel_shape", "2x2"),
     "pool.*kernel_shape.*must be of type ints"),
    (lambda g: _node(g, "Softmax")["attrs"].__setitem__("axis", 1.5), "softmax.*axis"),
    (lambda g: g["nodes"].reverse(), "not defined before this node"),  # order/cycle
    (lambda g: _node(g, "Add")["inputs"].__setitem__(0, "y"), "not defined before"),  # a cycle
    (lambda g: _node(g, "SparseConv")["attrs"].__setitem__("layer", "ghost"), "ghost"),
    (lambda g: g.__setitem__("outputs", ["zz"]), "graph output 'zz'"),
    (lambda g: g["constants"].append("extra"), "has no tensor"),
    (lambda g: g.__setitem__("nodes", "oops"), "malformed"),
])
def test_invalid_graph_refused_on_load(onnx_file, tmp_path, edit, match):
    path, _ = onnx_file
    ks.save(ks.convert(path), tmp_path / "good.kep")
    bad = tmp_path / "bad.kep"
    _rewrite_graph(tmp_path / "good.kep", bad, edit)
    with pytest.raises(ks.KepFileError, match=match) as err:
        ks.load(bad)
    assert str(bad) in str(err.value)


def test_version_1_file_still_reads(onnx_file, tmp_path):
    """A file written by the version-1 writer (layers only, no graph) still loads."""
    from safetensors.numpy import save as st_save
    m = ks.convert(onnx_file[0])
    tensors, entries = {}, []
    for i, layer in enumerate(m):
        for k, v in layer.weight.arrays().items():
            tensors[f"layers/{i}/{k}"] = np.ascontiguousarray(v)
        tensors[f"layers/{i}/bias"] = layer.bias if layer.bias is not None else None
        if layer.bias is None:
            del tensors[f"layers/{i}/bias"]
        entries.append({"name": layer.name, "format": layer.weight.name,
                        "shape": list(layer.weight.shape), "geometry": layer.geometry.to_json(),
                        "has_bias": layer.bias is not None})
    header = {"format": "kepsparse", "version": "1",
              "model": json.dumps({"layers": entries, "metadata": {}})}
    (tmp_path / "v1.kep").write_bytes(st_save(tensors, metadata=header))
    v1 = ks.load(tmp_path / "v1.kep")
    assert type(v1) is ks.SparseModel and list(v1.layers) == list(m.layers)
    x = np.ones((1, 4, 10, 10), np.float32)
    np.testing.assert_array_equal(v1["conv1"](x), m["conv1"](x))
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(tmp_path / "v1.kep"), "-i", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "y.npy")]) == 2  # no graph: a clear error, exit 2


def _graph(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


@pytest.mark.parametrize("node, match", [
    (helper.make_node("Tanh", ["x"], ["y"], name="act9"), r"act9 \(Tanh\).*op_type.*Tanh is not supported"),
    (helper.make_node("LeakyRelu", ["x"], ["y"], name="lr", gamma=2.0), r"lr \(LeakyRelu\).*gamma"),
    (helper.make_node("MaxPool", ["x"], ["y", "i"], name="mp", kernel_shape=[2, 2]), r"mp \(MaxPool\).*Indices"),
    (helper.make_node("Pad", ["x", "p"], ["y"], name="pd", mode="circular"), r"pd \(Pad\).*mode"),
    (helper.make_node("AveragePool", ["x"], ["y"], name="ap", kernel_shape=[2, 2, 2]), "ap.*2-D"),
])
def test_unsupported_refused_at_convert_with_node_name(node, match):
    inits = [numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "p")]
    proto = _graph([node], [_vi("x", [1, 2, 4, 4])], [_vi("y", None)], inits)
    with pytest.raises((ks.UnsupportedError, ks.ConvertError), match=match):
        ks.convert(proto)


def test_conv_without_constant_weight_and_strided_same_refused():
    w = numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w")
    n = helper.make_node("Conv", ["x", "w"], ["y"], name="c", auto_pad="SAME_UPPER", strides=[2, 2])
    with pytest.raises(ks.UnsupportedError, match=r"c \(Conv\).*auto_pad"):
        ks.convert(_graph([n], [_vi("x", [1, 2, 5, 5])], [_vi("y", None)], [w]))
    n = helper.make_node("Conv", ["x", "w"], ["y"], name="c", dilations=[1, 1], foo=1)
    with pytest.raises(ks.UnsupportedError, match=r"c \(Conv\).*'foo'"):
        ks.convert(_graph([n], [_vi("x", [1, 2, 5, 5])], [_vi("y", None)], [w]))
    n = helper.make_node("Conv", ["x", "w"], ["y"], name="c")
    with pytest.raises(ks.UnsupportedError, match="float32"):
        ks.convert(_graph([n], [_vi("x", [1, 2, 5, 5], TensorProto.DOUBLE)], [_vi("y", None)],
                          [numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float64), "w")]))


def test_depthwise_and_grouped_run_through_dense_path(rng):
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], name="dw", group=6, pads=[1, 1, 1, 1],
                              strides=[2, 2]),
             helper.make_node("Conv", ["h", "w2"], ["y"], name="gc", group=3, dilations=[2, 2])]
    proto = _graph(nodes, [_vi("x", [None, 6, 13, 11])], [_vi("y", None)],
                   [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w2, "w2")])
    m = ks.convert(proto)
    import onnxruntime as ort
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((2, 6, 13, 11)).astype(np.float32)
    for backend in ("auto", "dense", "reference"):
        assert_matches_ort(m(x, backend=backend), sess.run(None, {"x": x})[0])


def test_bad_inputs_name_the_field(onnx_file):
    m = ks.convert(onnx_file[0])
    with pytest.raises(ks.InputError, match="'x'.*dimension 1 must be 4"):
        m(np.zeros((1, 3, 10, 10), np.float32))
    with pytest.raises(ks.InputError, match="takes 1 input"):
        m(np.zeros((1, 4, 10, 10), np.float32), np.zeros(1))
    with pytest.raises(ks.InputError, match="'x'.*dimension 2 must be 10"):
        m(np.zeros((1, 4, 1, 1), np.float32))
    with pytest.raises(ks.InputError, match="'x'.*cannot be used as float32"):
        m(np.zeros((1, 4, 10, 10), np.complex64))
    with pytest.raises(ks.UnsupportedError, match="backend"):
        m(np.zeros((1, 4, 10, 10), np.float32), backend="gpu")


def test_cli_run_and_tune(onnx_file, rng, tmp_path, capsys):
    path, _ = onnx_file
    kep = tmp_path / "m.kep"
    assert main(["convert", str(path), "-o", str(kep)]) == 0
    x = rng.standard_normal((2, 4, 10, 10)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(kep), "--input", str(tmp_path / "x.npy"), "-o",
                 str(tmp_path / "y.npy"), "--threads", "1"]) == 0
    y_ort = ort_session(path).run(None, {"x": x})[0]
    assert_matches_ort(np.load(tmp_path / "y.npy"), y_ort)
    assert main(["tune", str(kep), "--threads", "1", "--repeats", "2", "-q"]) == 0
    m = ks.load(kep)
    choice = m.metadata["kernel_choice"]
    assert set(choice["layers"]) == {"conv1", "conv2"}
    assert set(m.describe_kernels().values()) <= set(choice["timings"]["conv1"]) | \
        set(choice["timings"]["conv2"])
    assert_matches_ort(m(x), y_ort)
    capsys.readouterr()
    assert main(["run", str(kep), "--input", str(tmp_path / "nope.npy"), "-o",
                 str(tmp_path / "y.npy")]) == 2
    assert "nope.npy" in capsys.readouterr().err


def test_loading_and_running_does_not_import_torch(onnx_file, tmp_path):
    path, _ = onnx_file
    ks.save(ks.convert(path), tmp_path / "m.kep")
    code = (
        "import sys, numpy as np, kepsparse\n"
        f"m = kepsparse.load({str(tmp_path / 'm.kep')!r})\n"
        "y = m(np.ones((2, 4, 10, 10), np.float32))\n"
        "m.tune(threads=1, repeats=1)\n"
        "bad = [k for k in sys.modules if k == 'torch' or k.startswith('torch.')]\n"
        "assert not bad, bad\n"
        "assert 'onnx' not in sys.modules\n"
        "print('ok', y.shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ok (2, 5)" in out.stdout


def test_load_with_tune_caches_choice_in_file(onnx_file, tmp_path):
    ks.save(ks.convert(onnx_file[0]), tmp_path / "m.kep")
    m = ks.load(tmp_path / "m.kep", tune=True, threads=1)
    assert set(m.metadata["kernel_choice"]["layers"]) == {"conv1", "conv2"}
    again = ks.load(tmp_path / "m.kep")
    assert again.metadata["kernel_choice"]["layers"] == m.metadata["kernel_choice"]["layers"]
    assert again.describe_kernels() == m.describe_kernels()


def test_constant_subgraphs_fold_but_random_ops_are_refused():
    shape = numpy_helper.from_array(np.array([1, 8], np.int64), "s")
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["c"], name="cos",
                              value=numpy_helper.from_array(np.array([2.0], np.float32))),
             helper.make_node("Mul", ["x", "c"], ["y"], name="mul")]
    m = ks.convert(_graph(nodes, [_vi("x", [1, 8])], [_vi("y", None)], [shape]))
    assert m.graph.op_counts() == {"Mul": 1}
    np.testing.assert_array_equal(m(np.ones((1, 8), np.float32)), np.full((1, 8), 2, np.float32))
    nodes = [helper.make_node("RandomUniformLike", ["s"], ["r"], name="rnd", dtype=1),
             helper.make_node("Add", ["x", "r"], ["y"], name="add")]
    with pytest.raises(ks.UnsupportedError, match=r"rnd \(RandomUniformLike\)"):
        ks.convert(_graph(nodes, [_vi("x", [1, 2])], [_vi("y", None)], [shape]))
