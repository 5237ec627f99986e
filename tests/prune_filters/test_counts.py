"""Params/FLOPs in the literature's convention (shared counter kepsparse.nets.flops): the
published CIFAR baselines, and the pruning budget's analytic estimate agrees with the counter."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kepsparse.nets.flops import count  # noqa: E402
from kepsparse.prune.filters import graph as G  # noqa: E402


@pytest.mark.parametrize("name,params_m,flops_m", [("resnet56", 0.85, 125.49),
                                                    ("vgg16_bn", 14.98, 313.73)])
def test_cifar_baselines(name, params_m, flops_m):
    from kepsparse.nets import get_model
    model = get_model(name)
    c = count(model, (3, 32, 32))
    # the published VGG-16 figure leaves out BatchNorm's affine parameters (ours: 14.99 M with)
    bn = sum(m.weight.numel() + m.bias.numel() for m in model.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    assert round((c["params"] - bn) / 1e6, 2) == params_m
    assert c["flops"] / 1e6 == pytest.approx(flops_m, abs=0.015)
    # the budget's estimate with nothing removed is the same number
    x = torch.zeros(1, 3, 32, 32)
    DG = G.build_graph(model, x)
    groups = G.find_groups(model, DG)
    assert G.estimate_flops(G.layer_costs(model, x), groups, {}) == c["flops"]


def test_vgg16_groups_are_all_plain_convs():
    from kepsparse.nets import get_model
    model = get_model("vgg16_bn")
    x = torch.zeros(1, 3, 32, 32)
    groups = G.find_groups(model, G.build_graph(model, x))
    assert len(groups) == 13 and all(g.prunable and not g.coupled for g in groups)
    assert all(len(g.out_bns) == 1 for g in groups)


def test_resnet56_at_half_flops_keeps_residual_widths():
    """The allocation reaches -50 % FLOPs by pruning only the 27 inner convs."""
    from kepsparse.nets.resnet import resnet56
    model = resnet56()
    x = torch.zeros(1, 3, 32, 32)
    groups = G.find_groups(model, G.build_graph(model, x))
    costs = G.layer_costs(model, x)
    n = G.allocate(groups, costs, flops_reduction=0.5)
    est = G.estimate_flops(costs, groups, n)
    assert 0.49 < 1 - est / 125485706 < 0.53
    assert set(n) == {g.root for g in groups if g.prunable}
