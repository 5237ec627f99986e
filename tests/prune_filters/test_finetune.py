"""Fine-tuning schemes, composition with KEP (-> kepsparse.convert -> sparse run), and every
method end to end on CIFAR ResNet-56 (synthetic 32x32 data, a couple of steps)."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kepsparse.errors import InputError  # noqa: E402
from kepsparse.prune.filters import filter_prune  # noqa: E402
from kepsparse.prune.finetune import (FinetuneConfig, finetune, kd_loss,  # noqa: E402
                                      mutual_loss, temperature)

from ._nets import planted_model, synthetic_loaders  # noqa: E402


def test_temperature_schedules():
    cfg = FinetuneConfig(t_start=8.0, t_end=2.0)
    assert temperature(0, 100, cfg) == pytest.approx(8.0)
    assert temperature(99, 100, cfg) == pytest.approx(2.0)
    ts = [temperature(s, 50, cfg) for s in range(50)]
    assert all(a >= b for a, b in zip(ts, ts[1:]))  # decreasing
    lin = FinetuneConfig(t_schedule="linear")
    assert temperature(50, 101, lin) == pytest.approx(5.0)
    assert temperature(10, 20, FinetuneConfig(t_schedule="constant")) == 8.0
    step = FinetuneConfig(t_schedule="step")
    assert sorted({round(temperature(s, 90, step), 6) for s in range(90)}) == [2.0, 5.0, 8.0]


def test_losses():
    torch.manual_seed(0)
    z, zt, y = torch.randn(5, 3), torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    ce = torch.nn.functional.cross_entropy(z, y)
    assert torch.allclose(kd_loss(z, zt, y, 4.0, 0.0), ce)
    assert float(kd_loss(zt, zt, y, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(mutual_loss(z, z, y, 1.0), ce, atol=1e-6)


@pytest.mark.parametrize("scheme", ["plain", "kd", "mutual"])
def test_schemes_train_the_student_only(scheme):
    teacher = planted_model()
    student = copy.deepcopy(teacher)
    t0 = copy.deepcopy(teacher.state_dict())
    s0 = copy.deepcopy(student.state_dict())
    hist = finetune(student, synthetic_loaders(), scheme, teacher=teacher, epochs=2, lr=1e-2)
    assert len(hist) == 2 and all(math.isfinite(h["loss"]) for h in hist)
    assert "accuracy" in hist[-1]
    if scheme == "kd":
        assert hist[0]["temperature"] > hist[-1]["temperature"]
    assert any(not torch.equal(v, s0[k]) for k, v in student.state_dict().items())
    assert all(torch.equal(v, t0[k]) for k, v in teacher.state_dict().items())  # never modified


def test_kd_needs_a_teacher_and_masks_are_respected():
    with pytest.raises(InputError) as e:
        finetune(planted_model(), synthetic_loaders(), "kd", epochs=1)
    assert e.value.field == "teacher"
    m = planted_model()
    mask = (torch.rand_like(m.conv2.weight) > 0.5).numpy()
    with torch.no_grad():
        m.conv2.weight.mul_(torch.from_numpy(mask).float())
    finetune(m, synthetic_loaders(), "plain", masks={"conv2": mask}, epochs=1, lr=1e-2)
    assert float(m.conv2.weight.detach()[~torch.from_numpy(mask)].abs().max()) == 0.0


def test_filter_then_kep_converts_and_runs_sparse():
    """digits CNN: filter pruning, then KEP on the remaining kernels, then kepsparse.convert;
    the sparse network (kepsparse convs) predicts what torch predicts."""
    from kepsparse import convert
    from kepsparse.nets.digits import DigitsCNN, sparse_logits
    torch.manual_seed(0)
    loaders = synthetic_loaders(n=48, classes=10)
    pruned, rep = filter_prune(DigitsCNN(), loaders, "similarity", flops_reduction=0.4,
                               finetune_scheme="kd", finetune_options={"epochs": 1},
                               kep_sparsity=0.5, kep_options={"penalty_epochs": 1,
                                                               "finetune_epochs": 1})
    assert rep["flops"]["reduction"] >= 0.4
    assert rep["flops"]["reduction_nonzero"] > rep["flops"]["reduction"]
    assert rep["kep"]["conv_sparsity"]["model"] > 0.3
    sparse = convert(pruned)
    assert sparse["conv2"].shape[0] == pruned.conv2.out_channels < 32
    x = next(iter(loaders["test"]))[0]
    with torch.no_grad():
        ref = pruned(x).numpy()
    got = sparse_logits(pruned, sparse, x)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["similarity", "lfrns", "fpar", "fcs", "l1"])
def test_every_method_end_to_end_on_resnet56(method):
    from kepsparse.nets.resnet import resnet56
    loaders = synthetic_loaders(n=8, shape=(3, 32, 32), classes=10, batch=4)
    opts = {"lfrns": {"fcr_steps": 1, "batches": 1}, "fcs": {"batches": 1},
            "fpar": {"se_steps": 1, "attention_batches": 1, "rank_batches": 1,
                     "rank_samples": 2}}.get(method, {})
    pruned, rep = filter_prune(resnet56(), loaders, method, flops_reduction=0.5,
                               finetune_scheme="paper",
                               finetune_options={"epochs": 1, "max_steps": 2}, **opts)
    assert rep["flops"]["before"] == 125485706
    assert rep["flops"]["reduction"] >= 0.5
    assert rep["layers"]["layer1.0.conv1"]["channels_after"] < 16
    assert rep["layers"]["layer1.0.conv2"]["channels_after"] == 16
    assert len(rep["finetune_history"]) == 1
    with torch.no_grad():
        assert pruned(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_loaders_yielding_more_than_two_items():
    """Batches (x, y, extra) - e.g. sample indices - work like (x, y)."""
    from torch.utils.data import DataLoader, TensorDataset
    base = synthetic_loaders()["train"].dataset
    x, y = base.tensors
    ds = TensorDataset(x, y, torch.arange(len(y)))
    loaders = {"train": DataLoader(ds, batch_size=16), "test": DataLoader(ds, batch_size=16)}
    teacher = planted_model()
    for scheme in ("plain", "kd", "mutual"):
        hist = finetune(copy.deepcopy(teacher), loaders, scheme, teacher=teacher, epochs=1, lr=1e-2)
        assert len(hist) == 1 and math.isfinite(hist[0]["loss"])


def test_train_dense_is_gone():
    from kepsparse.prune import finetune as ft
    assert not hasattr(ft, "train_dense")
