"""The reference networks reproduce the literature's parameter and FLOPs counts."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

from kepsparse.nets.flops import count  # noqa: E402
from kepsparse.nets.resnet import resnet18, resnet50, resnet56, resnet110  # noqa: E402
from kepsparse.nets.vgg import vgg16_bn  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("factory, shape, params_m, flops_m", [
    (resnet56, (3, 32, 32), 0.85, 125.49),
    (resnet110, (3, 32, 32), 1.72, 252.89),
    (resnet18, (3, 224, 224), 11.69, 1814),
    (resnet50, (3, 224, 224), 25.56, 4089),
])
def test_literature_counts(factory, shape, params_m, flops_m):
    c = count(factory(), shape)
    assert round(c["params"] / 1e6, 2) == params_m or round(c["params"] / 1e6, 2) == \
        pytest.approx(params_m, abs=0.011)
    assert c["flops"] / 1e6 == pytest.approx(flops_m, abs=0.5 if flops_m > 1000 else 0.006)


def test_vgg16_bn_counts():
    """Literature: 14.98 M / 313.73 M. Ours: 14.99 M (14.98 M without BatchNorm's affine
    parameters, the convention of the tool behind that number) / 313.74 M."""
    c = count(vgg16_bn(), (3, 32, 32))
    bn = sum(p.numel() for n, p in vgg16_bn().named_parameters()
             if "weight" in n or "bias" in n) - sum(
        m.weight.numel() + m.bias.numel() for m in vgg16_bn().modules()
        if type(m).__name__ in ("Conv2d", "Linear"))
    assert round((c["params"] - bn) / 1e6, 2) == 14.98
    assert c["flops"] / 1e6 == pytest.approx(313.73, abs=0.015)


def test_nonzero_counts_drop_with_pruning():
    from kepsparse.runtime.netutil import kep_prune_
    net = resnet56()
    kep_prune_(net, 0.9)
    dense, sparse = count(resnet56(), (3, 32, 32)), count(net, (3, 32, 32), nonzero=True)
    assert sparse["flops"] < 0.2 * dense["flops"]
