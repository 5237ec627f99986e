"""kepsparse.torch.sparsify: pruned Conv2d -> SparseConv2d, outputs equal the original's."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402

import kepsparse as ks  # noqa: E402
import kepsparse.torch as kt  # noqa: E402
from kepsparse.runtime.bench import build_net  # noqa: E402
from kepsparse.runtime.netutil import kep_prune_  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("name, shape", [("resnet56", (3, 32, 32)), ("resnet18", (3, 48, 40))])
def test_sparsify_matches_original(name, shape):
    torch.set_num_threads(2)
    net = build_net(name)
    kep_prune_(net, 0.85)
    fast = kt.sparsify(net)
    n_pruned = sum(1 for m in net.modules() if isinstance(m, nn.Conv2d)
                   and float((m.weight == 0).float().mean()) > 0.5)
    assert len(fast.kepsparse_replaced) == n_pruned > 0
    assert sum(isinstance(m, kt.SparseConv2d) for m in fast.modules()) == n_pruned
    assert not any(isinstance(m, kt.SparseConv2d) for m in net.modules())  # a copy
    x = torch.randn(3, *shape)
    with torch.no_grad():
        ref, got = net(x), fast(x)
    tol = 1e-4 * ref.abs().max().item() + 1e-5
    assert (ref - got).abs().max().item() <= tol
    with torch.inference_mode():
        assert (fast(x) - ref).abs().max().item() <= tol


def test_refuses_grad_and_honours_prune_masks():
    import torch.nn.utils.prune as prune
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2,
                                                                          groups=2, bias=False))
    for m in (net[0], net[2]):
        prune.l1_unstructured(m, "weight", amount=0.8)
    fast = kt.sparsify(net.eval(), inplace=False)
    assert fast.kepsparse_replaced == ["0", "2"]
    x = torch.randn(2, 4, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)
        y64 = fast(x.double())
        assert y64.dtype == torch.float64
        torch.testing.assert_close(y64, net(x).double(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ks.UnsupportedError, match="inference-only.*no_grad"):
        fast(x.requires_grad_())
    dense = nn.Conv2d(4, 4, 3)
    assert kt.sparsify(nn.Sequential(dense)).kepsparse_replaced == []  # not pruned: kept


def test_import_kepsparse_does_not_import_torch():
    code = ("import sys, kepsparse, kepsparse.runtime, kepsparse.nets.resnet, "
            "kepsparse.nets.vgg, kepsparse.nets.flops\n"
            "assert 'torch' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
