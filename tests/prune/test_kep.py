"""KEP's penalty, hard pruning and masked fine-tuning on small torch models."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from kepsparse.errors import InputError, UnsupportedError  # noqa: E402
from kepsparse.prune import kep  # noqa: E402
from kepsparse.nets.flops import count  # noqa: E402
from kepsparse.prune.common import MaskGuard  # noqa: E402
from kepsparse.prune.masks import select_masks  # noqa: E402


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.relu(self.c3(x))
        return self.fc(x.mean(dim=(2, 3)))


def _loaders(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()
    ds = torch.utils.data.TensorDataset(x, y)
    return {"train": torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, generator=g),
            "test": torch.utils.data.DataLoader(ds, batch_size=64)}


def _masks(model, sparsity=0.7):
    convs = {"c2": model.c2, "c3": model.c3}
    return {n: lm.mask for n, lm in select_masks(
        {n: m.weight.detach().numpy() for n, m in convs.items()}, sparsity, n_patterns=3).items()}


def test_penalty_gradient_is_exactly_outside_the_mask():
    torch.manual_seed(0)
    model = Tiny()
    masks = _masks(model)
    pairs = kep.penalty_pairs(model, masks)
    model.zero_grad()
    kep.kep_penalty(pairs).backward()
    for name, m in masks.items():
        w = getattr(model, name).weight
        expected = 2 * w.detach() * torch.from_numpy(~m).float()
        assert torch.equal(w.grad, expected)
        assert (w.grad[torch.from_numpy(m)] == 0).all()
    assert model.c1.weight.grad is None  # unmasked layers: no penalty


def test_penalty_shrinks_exactly_the_elements_outside_the_mask():
    torch.manual_seed(0)
    model = Tiny()
    masks = _masks(model)
    before = {n: getattr(model, n).weight.detach().clone() for n in masks}
    pairs = kep.penalty_pairs(model, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lam = 0.5
    for _ in range(20):
        opt.zero_grad()
        (lam * kep.kep_penalty(pairs)).backward()
        opt.step()
    for n, m in masks.items():
        w = getattr(model, n).weight.detach()
        inside = torch.from_numpy(m)
        assert torch.equal(w[inside], before[n][inside])  # untouched, bit for bit
        expected = before[n][~inside] * (1 - 2 * 0.1 * lam) ** 20
        assert torch.allclose(w[~inside], expected, rtol=1e-5, atol=1e-12)


def test_penalty_schedule_grows_to_its_cap():
    s = kep.PenaltySchedule(start=0.1, step=0.2, cap=0.5, interval=3)
    assert [s.value(t) for t in (0, 2, 3, 6, 9, 100)] == pytest.approx([0.1, 0.1, 0.3, 0.5, 0.5, 0.5])
    with pytest.raises(InputError, match="lambda_interval"):
        kep.PenaltySchedule(interval=0)
    with pytest.raises(InputError, match="lambda_step"):
        kep.PenaltySchedule(step=-1)


def test_penalty_phase_shrinks_outside_while_training():
    torch.manual_seed(0)
    model = Tiny()
    loaders = _loaders()
    masks = _masks(model)
    pairs = kep.penalty_pairs(model, masks)
    r0 = kep._outside_ratio(pairs)
    cfg = kep.make_config(penalty_epochs=6, penalty_tol=0, lambda_step=0.5, lambda_interval=1,
                          lambda_cap=5.0, lr=0.02, momentum=0.0)
    history = []
    sched = kep.penalty_phase(model, masks, loaders["train"], cfg, history=history)
    assert sched["steps_run"] == 6 * 4 and sched["final_lambda"] == 5.0
    assert history[-1]["outside_norm_ratio"] < 0.05 * r0


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_hard_prune_zeros_stay_zero_through_finetuning(optimizer):
    torch.manual_seed(0)
    model = Tiny()
    loaders = _loaders()
    masks = _masks(model, 0.8)
    kep.hard_prune(model, masks)
    for n, m in masks.items():
        w = getattr(model, n).weight.detach()
        assert (w[torch.from_numpy(~m)] == 0).all()
    kept_before = {n: getattr(model, n).weight.detach().clone() for n in masks}
    cfg = kep.make_config(finetune_epochs=3, optimizer=optimizer, weight_decay=1e-2,
                          finetune_lr=0.05)
    kep.finetune_masked(model, masks, loaders["train"], cfg)
    for n, m in masks.items():
        w = getattr(model, n).weight.detach()
        assert (w[torch.from_numpy(~m)] == 0).all()                     # exact zeros
        assert (w.numpy() != 0).sum() <= m.sum()
        assert not torch.equal(w, kept_before[n])                       # it did train
    # hooks removed: later training is unconstrained again
    model.zero_grad()
    kep.kep_penalty(kep.penalty_pairs(model, masks))  # no error
    loss = model(loaders["test"].dataset.tensors[0]).sum()
    loss.backward()
    assert (model.c2.weight.grad[torch.from_numpy(~masks["c2"])] != 0).any()


def test_mask_guard_masks_gradients():
    torch.manual_seed(0)
    model = Tiny()
    masks = _masks(model)
    guard = MaskGuard(model, masks)
    model(torch.randn(2, 1, 6, 6)).sum().backward()
    assert (model.c2.weight.grad[torch.from_numpy(~masks["c2"])] == 0).all()
    guard.remove()


def test_kep_prune_end_to_end_on_a_tiny_model():
    torch.manual_seed(0)
    model = Tiny()
    original = model.c2.weight.detach().clone()
    pruned, report = kep.kep_prune(model, _loaders(), 0.75, penalty_epochs=2, finetune_epochs=1,
                                   scope="plane", patterns=2)
    assert torch.equal(model.c2.weight, original)  # the input model is untouched
    assert report["excluded_layers"] == ["c1"]
    assert set(k for k, v in report["layers"].items() if v["pruned"]) == {"c2", "c3"}
    assert report["conv_sparsity"]["model"] >= 0.75
    for n in ("c2", "c3"):
        row = report["layers"][n]
        assert len(row["pattern_library"]) <= 2 and sum(row["pattern_usage"]) > 0
    assert report["params"]["after"] < report["params"]["before"]
    assert report["flops"]["after"] < report["flops"]["before"]
    assert report["reference"] == "doi:10.1016/j.neunet.2024.106708"
    assert {"dense", "final", "after_hard_prune"} <= set(report["accuracy"])
    assert report["penalty_schedule"]["interval_steps"] == 5
    import json
    json.dumps(report)


def test_flops_follow_the_literature_convention():
    model = Tiny()
    r = count(model, torch.zeros(1, 1, 6, 6))
    px = 36
    expected = (4 * 1 * 9 * px + 4 * px) + (8 * 4 * 9 * px + 8 * px) + (8 * 8 * 9 * px) + (8 * 3 + 3)
    assert r["flops"] == expected and count(model, (1, 6, 6))["flops"] == expected
    assert r["params"] == sum(p.numel() for p in model.parameters())
    assert r["flops_per_layer"]["c3"] == 8 * 8 * 9 * px
    m = np.zeros((8, 8, 3, 3), bool)
    m[:, :, 1, 1] = True
    kep.hard_prune(model, {"c3": m})
    r2 = count(model, (1, 6, 6), nonzero=True)  # exact zeros outside the mask: params after
    assert r["flops"] - r2["flops"] == 8 * 8 * 8 * px
    assert r["params"] - r2["params"] == 8 * 8 * 8


def test_flops_count_every_call_and_linear_rows():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(2, 2, 1, bias=False)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            x = self.c(self.c(x))                 # the same conv twice
            return self.fc(x.reshape(1, 2, -1))   # (1, 2 rows, 4 features)

    r = count(Twice(), (2, 2, 2))
    assert r["flops_per_layer"]["c"] == 2 * (2 * 2 * 4)
    assert r["flops_per_layer"]["fc"] == 2 * (4 * 3 + 3)
    assert r["flops"] == r["conv_flops"] + r["linear_flops"] == 32 + 30


def test_report_counts_match_the_shared_counter():
    model = Tiny()
    pruned, report = kep.kep_prune(model, _loaders(), 0.6, penalty_epochs=1, finetune_epochs=1,
                                   threads=1)
    before, after = count(model, (1, 6, 6)), count(pruned, (1, 6, 6), nonzero=True)
    assert report["params"]["before"] == before["params"]
    assert report["params"]["after"] == after["params"]
    assert report["flops"]["after"] == after["flops"]
    assert report["layers"]["c2"]["flops_after"] == after["flops_per_layer"]["c2"]
    masks = {n: np.asarray(m, bool) for n, m in pruned.kep_masks.items()}
    zero = sum(int((~m).sum()) for m in masks.values())
    assert report["conv_sparsity"]["pruned_layers"] == round(zero / sum(m.size for m in masks.values()), 6)


def test_a_model_without_conv_is_refused():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    with pytest.raises(UnsupportedError, match="Sequential.*no torch.nn.Conv2d"):
        kep.kep_prune(mlp, _loaders(), 0.5)


def test_only_excluded_convs_is_refused():
    one = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(InputError, match="exclude.*all excluded"):
        kep.prunable_layers(one)
    with pytest.raises(InputError, match="no Conv2d named 'nope'"):
        kep.prunable_layers(Tiny(), exclude=["nope"])
    chosen, excluded = kep.prunable_layers(Tiny(), exclude=())
    assert list(chosen) == ["c1", "c2", "c3"] and excluded == []


def test_conv_classifier_is_excluded_by_default():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                        nn.Conv2d(4, 10, 1))
    assert kep.default_exclude(net) == ["0", "4"]


@pytest.mark.parametrize("bad", [1.0, 1.2, -0.01])
def test_impossible_sparsity_is_refused(bad):
    with pytest.raises(InputError, match="sparsity"):
        kep.kep_prune(Tiny(), _loaders(), bad)


def test_model_target_impossible_when_excluded_layers_are_too_big():
    net = nn.Sequential(nn.Conv2d(1, 64, 3), nn.Conv2d(64, 2, 1), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(InputError, match="excluded layers alone"):
        kep.kep_prune(net, _loaders(), 0.99, exclude=["0"])


def test_unknown_option_is_named():
    with pytest.raises(InputError, match="unknown KEP option"):
        kep.kep_prune(Tiny(), _loaders(), 0.5, patern=3)
