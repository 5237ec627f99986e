"""Whole reference networks (exported with torch.onnx.export, dense and KEP-pruned) run by
kepsparse match onnxruntime: max|y - y_ort| <= 1e-4 max|y_ort| + 1e-5, batch 1 and 4."""
from __future__ import annotations

import numpy as np
import pytest

import kepsparse as ks

from .conftest import NETWORKS, assert_matches_ort, ort_session

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "kep85"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_network_matches_onnxruntime(name, pruned, exported, tmp_path):
    dense, kep, shape = exported(name)
    src = kep if pruned else dense
    model = ks.convert(src)
    ks.save(model, tmp_path / "m.kep")
    m = ks.load(tmp_path / "m.kep")
    producer = {o: n.op for n in m.graph.nodes for o in n.outputs}
    assert not [n for n in m.graph.nodes if n.op == "BatchNormalization"
                and producer.get(n.inputs[0]) == "SparseConv"], "BN after conv not folded"
    if pruned:
        assert m.summary()["totals"]["sparsity"] > 0.3  # 1x1 convs stay dense
    sess = ort_session(src)
    rng = np.random.default_rng(0)
    for batch in (1, 4):
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        y_ort = sess.run(None, {"x": x})[0]
        assert_matches_ort(m(x, threads=2), y_ort)


def test_reference_backend_whole_network(exported):
    """The executable specification runs a whole pruned network too."""
    _, kep, shape = exported("resnet56")
    m = ks.convert(kep)
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(np.float32)
    assert_matches_ort(m(x, backend="reference"), ort_session(kep).run(None, {"x": x})[0])
    assert set(m.describe_kernels("reference").values()) == {"any_f32_ref[sparse]"}


def test_every_backend_agrees(exported):
    _, kep, shape = exported("resnet56")
    m = ks.convert(kep)
    x = np.random.default_rng(2).standard_normal((1, *shape)).astype(np.float32)
    y_ort = ort_session(kep).run(None, {"x": x})[0]
    for backend, reason in ks.backend_status().items():
        if reason is None:
            assert_matches_ort(m(x, backend=backend, threads=2), y_ort)
    assert_matches_ort(m(x, backend="dense"), y_ort)


def test_torch_export_of_a_user_model_converts_and_runs(tmp_path):
    """A model written by a user (depthwise + grouped convs, BN, LeakyReLU, Sigmoid gate,
    avg-pool, concat, softmax) exported with torch.onnx.export converts and runs."""
    torch = pytest.importorskip("torch")
    import torch.nn as nn

    from kepsparse.runtime.netutil import export_onnx

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU6())
            self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16),
                                    nn.LeakyReLU(0.1))
            self.gc = nn.Conv2d(16, 32, 3, 1, 1, groups=4)
            self.pw = nn.Conv2d(16, 16, 1)
            self.pool = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
            self.head = nn.Linear(48, 7)

        def forward(self, x):
            x = self.stem(x)
            x = self.dw(x) * torch.sigmoid(self.pw(x))
            x = torch.cat([self.gc(x), x], 1)
            x = nn.functional.max_pool2d(self.pool(x), 2, ceil_mode=True)
            return torch.softmax(self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)), -1)

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
        w = net.gc.weight
        w.mul_((torch.rand_like(w) > 0.8).float())  # a pruned grouped conv
    path = tmp_path / "user.onnx"
    export_onnx(net, (3, 20, 18), path)
    m = ks.convert(path)
    x = np.random.default_rng(3).standard_normal((3, 3, 20, 18)).astype(np.float32)
    y_ort = ort_session(path).run(None, {"x": x})[0]
    assert_matches_ort(m(x), y_ort)
    with torch.no_grad():
        np.testing.assert_allclose(m(x), net(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-6)
