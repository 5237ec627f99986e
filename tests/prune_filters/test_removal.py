"""Physical removal (Torch-Pruning) keeps the output shape, equals the masked network, and the
FLOPs really drop - on the digits CNN, CIFAR ResNet-56 (inner convs) and a 1x1-shortcut ResNet
(coupled residual channels)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kepsparse.nets.flops import count  # noqa: E402
from kepsparse.prune.filters import graph as G  # noqa: E402

from ._nets import synthetic_loaders  # noqa: E402


def _random_removal(groups, rate, seed=0):
    rng = np.random.default_rng(seed)
    return {g.root: sorted(rng.choice(g.channels, int(rate * g.channels), replace=False).tolist())
            for g in groups if g.prunable and int(rate * g.channels)}


def _remove_and_check(model, x, residual="keep", rate=0.5):
    model.eval()
    original = copy.deepcopy(model)
    DG = G.build_graph(model, x)
    groups = G.find_groups(model, DG, residual=residual)
    costs = G.layer_costs(model, x)
    removal = _random_removal(groups, rate)
    estimate = G.estimate_flops(costs, groups, {k: len(v) for k, v in removal.items()})
    before = count(original, tuple(x.shape[1:]))
    plan = G.remove_channels(model, x, removal, DG)
    with torch.no_grad():
        y0, y1 = original(x), model(x)
    assert y1.shape == y0.shape
    # pruned == masked (removed channels zeroed in place), to float rounding
    diff = G.verify_equivalence(original, model, plan, x)
    assert diff < 1e-4
    masked = copy.deepcopy(original)
    G.apply_zeroing(masked, plan)
    with torch.no_grad():
        assert torch.allclose(masked(x), y1, atol=1e-4, rtol=1e-4)
    after = count(model, tuple(x.shape[1:]))
    assert after["flops"] < before["flops"] and after["params"] < before["params"]
    assert after["flops"] == pytest.approx(estimate, rel=1e-9)  # the budget's estimate is exact
    return groups, removal, model


def test_digits_cnn():
    from kepsparse.nets.digits import DigitsCNN
    torch.manual_seed(0)
    groups, removal, pruned = _remove_and_check(DigitsCNN(), torch.randn(3, 1, 8, 8))
    assert [g.root for g in groups if g.prunable] == ["conv1", "conv2", "conv3", "conv4"]
    assert pruned.conv4.out_channels == 32 and pruned.fc.in_features == 32 * 4  # through flatten


def test_resnet56_inner_convs_only():
    from kepsparse.nets.resnet import randomize_bn, resnet56
    model = randomize_bn(resnet56())
    groups, removal, pruned = _remove_and_check(model, torch.randn(2, 3, 8, 8))
    prunable = [g.root for g in groups if g.prunable]
    assert len(prunable) == 27 and all(r.endswith(".conv1") and r.startswith("layer")
                                       for r in prunable)
    kept = [g for g in groups if not g.prunable]
    assert any("residual channels kept" in g.reason for g in kept)
    assert pruned.layer1[0].conv2.out_channels == 16  # residual width untouched


def test_option_b_resnet_prunes_coupled_residual_channels():
    """ImageNet-style ResNet-18 (1x1-conv shortcuts) at 32x32: residual='prune' removes the same
    channels from every conv/BN tied by the adds, and the result still equals the masked net."""
    from kepsparse.nets.resnet import randomize_bn, resnet18
    model = randomize_bn(resnet18(num_classes=10))
    groups, removal, pruned = _remove_and_check(model, torch.randn(1, 3, 32, 32), "prune", 0.25)
    coupled = [g for g in groups if g.prunable and g.coupled]
    assert coupled and any(len(g.out_convs) >= 3 for g in coupled)
    g = coupled[0]
    widths = {dict(pruned.named_modules())[c].out_channels for c in g.out_convs}
    assert widths == {g.channels - len(removal[g.root])}


def test_state_dict_of_a_pruned_model_loads_into_a_fresh_one():
    from kepsparse.nets.digits import DigitsCNN
    torch.manual_seed(0)
    _, _, pruned = _remove_and_check(DigitsCNN(), torch.randn(2, 1, 8, 8))
    fresh = DigitsCNN()
    G.resize_to_state(fresh, pruned.state_dict())
    fresh.load_state_dict(pruned.state_dict())
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), pruned.eval()(x))


@pytest.mark.parametrize("method", ["similarity", "lfrns", "fpar", "fcs", "l1"])
def test_pipeline_meets_the_flops_target(method):
    from kepsparse.nets.digits import DigitsCNN
    from kepsparse.prune.filters import filter_prune
    torch.manual_seed(0)
    opts = {"lfrns": {"fcr_steps": 2, "batches": 1}, "fcs": {"batches": 1},
            "fpar": {"se_steps": 2, "attention_batches": 1, "rank_batches": 1}}.get(method, {})
    pruned, rep = filter_prune(DigitsCNN(), synthetic_loaders(classes=10), method,
                               flops_reduction=0.45, finetune_scheme="none", **opts)
    assert rep["flops"]["reduction"] >= 0.45
    assert rep["masked_vs_pruned_max_abs_diff"] < 1e-4
    assert rep["flops"]["after"] == count(pruned, (1, 8, 8))["flops"]
    assert rep["layers"]["conv2"]["channels_after"] < 32
    assert rep["reference"].startswith(("doi:10.", "arXiv"))
