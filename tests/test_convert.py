"""kepsparse.convert on every input kind, and its refusals."""
from __future__ import annotations

import numpy as np
import pytest

import kepsparse as ks

torch = pytest.importorskip("torch")
nn = torch.nn
import torch.nn.utils.prune as prune  # noqa: E402

from .conftest import torch_conv2d  # noqa: E402


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.conv3 = nn.Conv2d(16, 16, 5, padding="same", dilation=2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.conv3(x)
        return self.fc(x.mean((2, 3)))


def pruned_net(amount=0.8):
    torch.manual_seed(0)
    net = SmallNet()
    for m in (net.conv1, net.conv2, net.conv3):
        prune.l1_unstructured(m, "weight", amount=amount)
    return net


def test_torch_prune_checkpoint_counts(tmp_path):
    net = pruned_net()
    path = tmp_path / "pruned.pt"
    torch.save(net.state_dict(), path)
    model = ks.convert(path)
    assert list(model.layers) == ["conv1", "conv2", "conv3"]
    for name in model.layers:
        mask = getattr(net, name).weight_mask.numpy()
        layer = model[name]
        assert layer.weight.nnz == int(mask.sum())
        assert np.array_equal(layer.weight.kept_mask(), mask != 0)
        assert np.array_equal(layer.weight.to_dense(), getattr(net, name).weight.detach().numpy())
        assert layer.geometry is None  # a state_dict does not record it
    assert model["conv2"].bias is None and model["conv1"].bias is not None
    assert model.metadata["source_kind"] == "torch-checkpoint"


def test_kept_zero_inside_mask_is_counted(tmp_path):
    net = pruned_net()
    with torch.no_grad():
        kept = net.conv1.weight_mask.nonzero()[0]
        net.conv1.weight_orig[tuple(kept)] = 0.0  # a kept weight that is exactly zero
    path = tmp_path / "p.pt"
    torch.save(net.state_dict(), path)
    layer = ks.convert(path, format="csr")["conv1"]
    assert layer.weight.nnz == int(net.conv1.weight_mask.sum())


def test_plain_zeros_and_wrapped_checkpoint(tmp_path):
    net = pruned_net()
    for m in (net.conv1, net.conv2, net.conv3):
        prune.remove(m, "weight")  # bake the mask: plain zeros
    path = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, path)
    model = ks.convert(path)
    for name in model.layers:
        w = getattr(net, name).weight.detach().numpy()
        assert model[name].weight.nnz == int(np.count_nonzero(w))


def test_safetensors(tmp_path):
    from safetensors.torch import save_file
    net = pruned_net()
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    model = ks.convert(path)
    for name in model.layers:
        assert model[name].weight.nnz == int(getattr(net, name).weight_mask.sum())


def test_safetensors_bfloat16(tmp_path):
    from safetensors.torch import save_file
    w = torch.zeros(4, 2, 3, 3, dtype=torch.bfloat16)
    w[0, 0, 1, 1] = 1.5
    path = tmp_path / "bf16.safetensors"
    save_file({"c.weight": w}, str(path))
    assert ks.convert(path)["c"].weight.nnz == 1


def test_live_module_geometry_and_output(rng):
    net = pruned_net().eval()
    model = ks.convert(net)
    x = rng.standard_normal((2, 3, 12, 10)).astype(np.float32)
    with torch.no_grad():
        expected = net.conv1(torch.from_numpy(x)).numpy()
        h = torch.relu(torch.from_numpy(expected))
        expected2 = net.conv2(h).numpy()
        expected3 = net.conv3(torch.relu(torch.from_numpy(expected2))).numpy()
    np.testing.assert_allclose(model["conv1"](x), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model["conv2"](np.maximum(expected, 0)), expected2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model["conv3"](np.maximum(expected2, 0)), expected3, rtol=1e-4, atol=1e-4)
    assert model["conv3"].geometry.padding == (4, 4, 4, 4)


def test_module_refuses_circular_padding():
    net = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular"))
    with pytest.raises(ks.UnsupportedError, match="padding_mode"):
        ks.convert(net)


def _onnx_of(net, path, x):
    import onnx
    from onnx import helper, numpy_helper
    # build the Conv graph by hand (no exporter dependency): conv1 -> Relu -> conv2
    w1 = net.conv1.weight.detach().numpy()
    b1 = net.conv1.bias.detach().numpy()
    w2 = net.conv2.weight.detach().numpy()
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"], name="relu1"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1],
                              strides=[2, 2])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return m


def test_onnx(tmp_path, rng):
    net = pruned_net()
    x = rng.standard_normal((1, 3, 9, 9)).astype(np.float32)
    path = tmp_path / "m.onnx"
    proto = _onnx_of(net, path, x)
    for source in (path, proto):
        model = ks.convert(source)
        assert model["conv1"].weight.nnz == int(net.conv1.weight_mask.sum())
        assert model["conv2"].geometry.stride == (2, 2)
    y = model["conv1"](x)
    np.testing.assert_allclose(y, torch_conv2d(x, net.conv1.weight.detach().numpy(),
                                               net.conv1.bias.detach().numpy(), padding=1),
                               rtol=1e-4, atol=1e-5)


def test_onnx_dynamic_weight_refused(tmp_path):
    import onnx
    from onnx import helper
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="dyn")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4]),
         helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [1, 1, 3, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ks.ConvertError, match="dyn.*not an initializer"):
        ks.convert(path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"conv.weight": torch.zeros(2, 2, 3, 3), "x": _Payload(marker)}, path)
    with pytest.raises(ks.ConvertError, match="refused.*pickled") as err:
        ks.convert(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_no_conv_weights(tmp_path):
    path = tmp_path / "fc.pt"
    torch.save({"fc.weight": torch.ones(3, 4), "fc.bias": torch.ones(3)}, path)
    with pytest.raises(ks.ConvertError, match="no convolution weights"):
        ks.convert(path)


def test_missing_and_unknown(tmp_path):
    with pytest.raises(ks.ConvertError, match="no such file"):
        ks.convert(tmp_path / "nope.pt")
    odd = tmp_path / "weights.xyz"
    odd.write_bytes(b"hello world, not a model")
    with pytest.raises(ks.ConvertError, match="unknown input kind"):
        ks.convert(odd)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ks.ConvertError, match="cannot read"):
        ks.convert(bad)
    with pytest.raises(ks.ConvertError, match="format"):
        ks.convert(pruned_net(), format="zip")


def test_mask_mismatch(tmp_path):
    path = tmp_path / "mm.pt"
    torch.save({"c.weight_orig": torch.ones(2, 2, 3, 3), "c.weight_mask": torch.ones(2, 2, 3, 1)}, path)
    with pytest.raises(ks.ConvertError, match="'c'.*weight_mask"):
        ks.convert(path)


def test_nan_weight_names_layer(tmp_path):
    w = torch.zeros(2, 2, 3, 3)
    w[0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save({"layer4.conv.weight": w}, path)
    with pytest.raises(ks.ConvertError, match="layer4.conv.*NaN"):
        ks.convert(path)


def test_safetensors_bfloat16_with_ml_dtypes_loaded(tmp_path):
    """onnx imports ml_dtypes, which gives NumPy a bfloat16 dtype: still a float weight."""
    pytest.importorskip("ml_dtypes")
    import onnx  # noqa: F401  (registers ml_dtypes' bfloat16 with NumPy)
    test_safetensors_bfloat16(tmp_path)


def test_duplicate_layer_names_refused_with_path(tmp_path):
    path = tmp_path / "dup.pt"  # prefix "" is named "conv": it collides with "conv.weight"
    torch.save({"weight": torch.ones(2, 2, 3, 3), "conv.weight": torch.ones(2, 2, 3, 3)}, path)
    with pytest.raises(ks.KepError, match="dup.pt.*'conv'.*name"):
        ks.convert(path)
