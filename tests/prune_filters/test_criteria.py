"""Each criterion puts a planted duplicate / inactive filter first in its removal order."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kepsparse.errors import InputError  # noqa: E402
from kepsparse.prune.filters import graph as G  # noqa: E402
from kepsparse.prune.filters.criteria import CRITERIA, Context, kmeans, make_criterion  # noqa: E402

from ._nets import DUPLICATE, INACTIVE, planted_model, synthetic_loaders  # noqa: E402

FAST = {"similarity": {"clusters": 0.5}, "l1": {},
        "fcs": {"batches": 2},
        "lfrns": {"batches": 2, "fcr_steps": 4, "clusters": 7 / 8},
        "fpar": {"se_steps": 4, "attention_batches": 1, "rank_batches": 1}}


def _prepared(name, model=None, **extra):
    model = model or planted_model()
    loaders = synthetic_loaders()
    x = next(iter(loaders["test"]))[0][:1]
    DG = G.build_graph(model, x)
    groups = G.find_groups(model, DG)
    crit = make_criterion(name, **{**FAST[name], **extra})
    crit.prepare(Context(model, DG, groups, loaders["train"], seed=0))
    return crit


@pytest.fixture(scope="module")
def prepared():
    return {name: _prepared(name) for name in CRITERIA}


@pytest.mark.parametrize("name", list(CRITERIA))
def test_inactive_filter_is_removed_first(prepared, name):
    order = prepared[name].order("conv1")
    assert sorted(order.tolist()) == list(range(8))  # a full permutation
    assert order[0] == INACTIVE


@pytest.mark.parametrize("name", ["similarity", "fcs", "lfrns"])
def test_planted_duplicate_goes_right_after_the_dead_one(prepared, name):
    """Redundancy criteria: one of the two identical filters is next, and only one of them."""
    order = prepared[name].order("conv1").tolist()
    assert order[1] in DUPLICATE
    assert order.index(({*DUPLICATE} - {order[1]}).pop()) > 1


def _no_dead(model):
    """The planted model with the inactive filter revived (so the dead-first rule is silent)."""
    with torch.no_grad():
        model.conv1.weight[INACTIVE] = torch.randn_like(model.conv1.weight[INACTIVE])
        model.conv1.bias[INACTIVE] = 0.05
    return model


@pytest.mark.parametrize("name", ["similarity", "fcs", "lfrns"])
def test_duplicate_ranked_first_on_its_own(name):
    order = _prepared(name, _no_dead(planted_model())).order("conv1")
    assert order[0] in DUPLICATE


def test_l1_and_fpar_rank_a_weak_filter_without_the_dead_rule():
    model = _no_dead(planted_model())
    with torch.no_grad():
        model.conv1.weight[3] *= 1e-3       # tiny: lowest L1, near-constant (rank-1) map
        model.conv1.bias[3] = -1.0          # ... and ReLU kills it on almost every input
    assert _prepared("l1", model).order("conv1")[0] == 3
    fpar = _prepared("fpar", model)
    assert fpar.order("conv1")[0] == 3
    assert fpar.stats["conv1"]["rank"][3] < 1.0


def test_similarity_kernel_dispersion_weights_the_clustered_layer_harder():
    model = _no_dead(planted_model())
    with torch.no_grad():  # conv2's filters: all near one direction -> low dispersion
        base = torch.randn_like(model.conv2.weight[0])
        model.conv2.weight.copy_(base + 0.05 * torch.randn_like(model.conv2.weight))
    crit = _prepared("similarity", model)
    assert crit.layer_weights["conv2"] > crit.layer_weights["conv1"]
    assert crit.dispersion["conv2"] < crit.dispersion["conv1"]
    mean = np.mean(list(crit.dispersion.values()))
    assert crit.layer_weights["conv1"] == pytest.approx(mean / crit.dispersion["conv1"])


def test_pipeline_allocates_with_the_criterion_dispersion(monkeypatch):
    """Kernel Dispersion is computed once, by the criterion; the pipeline uses its
    ``layer_weights`` (and asks a criterion without weights to compute them)."""
    from kepsparse.prune.filters import criteria as C
    from kepsparse.prune.filters import pipeline

    calls = []
    real = C.Criterion.use_kernel_dispersion

    def spy(self):
        calls.append(self.name)
        real(self)

    seen = {}
    real_allocate = G.allocate

    def allocate(groups, costs, **kw):
        if kw.get("weights") is not None:
            seen["weights"] = kw["weights"]
        return real_allocate(groups, costs, **kw)

    monkeypatch.setattr(C.Criterion, "use_kernel_dispersion", spy)
    monkeypatch.setattr(pipeline.G, "allocate", allocate)
    for name in ("similarity", "l1"):
        calls.clear()
        seen.clear()
        _, rep = pipeline.filter_prune(planted_model(), synthetic_loaders(), name,
                                       flops_reduction=0.3, allocation="dispersion",
                                       finetune_scheme="none", verify="shape", **FAST[name])
        assert calls == [name]  # once: in prepare (similarity) or by the pipeline (l1)
        disp = {n: r["kernel_dispersion"] for n, r in rep["layers"].items() if "kernel_dispersion" in r}
        assert disp and set(disp) == set(seen["weights"])


def test_unknown_option_and_bad_values_are_named():
    with pytest.raises(InputError, match="clusterz"):
        make_criterion("similarity", clusterz=3)
    with pytest.raises(InputError, match="unknown filter criterion 'nope'"):
        make_criterion("nope")
    with pytest.raises(InputError) as e:
        _prepared("fpar", fusion="max")
    assert e.value.field == "fusion"


def test_kmeans_is_deterministic_and_clamps_k():
    x = np.array([0.0, 0.1, 5.0, 5.1, 5.2])
    a, b = kmeans(x, 2, seed=3), kmeans(x, 2, seed=3)
    assert (a == b).all() and len(set(a[:2])) == 1 and a[0] != a[2]
    assert len(set(kmeans(np.ones(4), 3))) == 1


def test_criterion_as_a_torch_pruning_importance():
    """The adapter lets Torch-Pruning's own MetaPruner use a criterion."""
    import warnings

    import torch_pruning as tp

    from kepsparse.prune.filters.pipeline import criterion_importance
    model = planted_model()
    loaders = synthetic_loaders()
    x = next(iter(loaders["test"]))[0][:1]
    DG = G.build_graph(model, x)
    ctx = Context(model, DG, G.find_groups(model, DG), loaders["train"])
    crit = make_criterion("l1")
    crit.prepare(ctx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(model, x, importance=criterion_importance(crit, ctx),
                                      pruning_ratio=0.125, ignored_layers=[model.fc])
        pruner.step()
    assert model.conv1.out_channels == 7
    assert float(model.conv1.weight.detach().abs().sum((1, 2, 3)).min()) > 0  # the dead one went
