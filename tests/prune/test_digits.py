"""KEP on real data (sklearn digits): it beats random masks of the same sparsity, and the
result converts to the pattern format and runs with kepsparse's kernels like torch."""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import kepsparse  # noqa: E402
from kepsparse.nets.digits import digits_arrays, sparse_logits  # noqa: E402
from kepsparse.prune import kep  # noqa: E402
from kepsparse.prune.common import evaluate  # noqa: E402
from kepsparse.prune.masks import random_masks  # noqa: E402


def test_split_is_fixed_by_the_seed():
    a = digits_arrays(0)
    b = digits_arrays(0)
    c = digits_arrays(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[3], c[3])
    assert a[0].shape[1:] == (1, 8, 8) and len(a[0]) + len(a[2]) == 1797


def test_dense_model_learns(digits_dense):
    _, _, acc = digits_dense
    assert acc > 95.0


def test_short_kep_prune_beats_random_masks_and_runs_sparse(digits_dense):
    model, loaders, acc = digits_dense
    short = dict(penalty_epochs=3, finetune_epochs=2, lambda_step=0.2, lambda_interval=3,
                 threads=1)
    pruned, report = kep.kep_prune(model, loaders, 0.85, patterns=4, **short)
    assert report["conv_sparsity"]["model"] >= 0.85

    # the baseline: random unstructured masks of the same per-layer sizes, same fine-tuning
    rnd = copy.deepcopy(model)
    masks = pruned.kep_masks
    rmasks = random_masks({n: m for n, m in masks.items()}, report["config"]["sparsity"], seed=0)
    rng = np.random.default_rng(0)
    for n, m in masks.items():  # exactly as many kept per layer as KEP keeps
        flat = np.zeros(m.size, bool)
        flat[rng.choice(m.size, int(m.sum()), replace=False)] = True
        rmasks[n] = flat.reshape(m.shape)
    kep.hard_prune(rnd, rmasks)
    cfg = kep.make_config(**short)
    kep.finetune_masked(rnd, rmasks, loaders["train"], cfg)
    acc_random = evaluate(rnd, loaders["test"])
    print("KEP", report["accuracy"], "random masks", acc_random)
    assert report["accuracy"]["final"] > acc_random + 1.0, (report["accuracy"], acc_random)

    # pattern format with few indexes; the sparse run predicts like torch on every test image
    sparse = kepsparse.convert(pruned, format="pattern")
    pat = [layer for layer in sparse if layer.name != "conv1"]
    assert all(layer.weight.n_patterns - 1 <= 4 for layer in pat)
    ratio = sum(layer.weight.index_bytes for layer in pat) / sum(layer.weight.value_bytes for layer in pat)
    assert ratio <= 0.15
    x = torch.cat([xb for xb, _ in loaders["test"]])
    with torch.no_grad():
        ref = pruned(x).numpy()
    got = sparse_logits(pruned, sparse, x)
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_sparse_agreement_reuses_a_converted_model(digits_dense, monkeypatch):
    from kepsparse.nets import digits
    from kepsparse.prune import kep_cli

    model, loaders, _ = digits_dense
    model.train()
    sparse = kepsparse.convert(model)
    calls = []
    real = kepsparse.convert

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(kepsparse, "convert", counting)
    r = digits.sparse_agreement(model, loaders["test"], sparse=sparse)
    assert calls == [] and r["agreement"] == 1.0
    assert model.training  # its mode is restored
    model.eval()
    # the CLI check converts once: sparse_check's model feeds sparse_agreement

    class Args:
        model = "digits"
        check_backend = "reference"

    out = kep_cli.check_sparse_run(Args(), model, loaders)
    assert len(calls) == 1 and out["sparse_run"]["agreement"] == 1.0


def test_digits_training_uses_the_shared_helpers(monkeypatch):
    from kepsparse.nets import digits
    from kepsparse.prune import common
    assert not hasattr(digits, "evaluate")
    seen = []
    monkeypatch.setattr(common, "set_threads", lambda t: seen.append(t))
    old = torch.get_num_threads()
    model, loaders, acc = digits.train_digits_cnn(seed=0, epochs=1, threads=1)
    torch.set_num_threads(old)
    assert seen == [1] and not model.training
    assert acc == common.evaluate(model, loaders["test"])
