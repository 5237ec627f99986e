"""A small CNN for scikit-learn's digits (1,797 real 8x8 handwritten digits, shipped offline).

The real-data path of the demo and the KEP tests: a seeded, fixed held-out split
(``digits_loaders(seed)``), a four-conv network that trains to ~98 % held-out accuracy in a
few seconds on two CPU cores (``train_digits_cnn(seed)``), and ``sparse_logits`` which runs
the same network with every conv done by kepsparse's sparse kernels (the rest - ReLU, max
pool, the linear classifier - in NumPy), to check that the sparse run predicts what torch
predicts.

    model, loaders, acc = train_digits_cnn(seed=0)
    pruned, report = kepsparse.prune.kep_prune(model, loaders, sparsity=0.8)
    sparse = kepsparse.convert(pruned)
    agree = (sparse_logits(pruned, sparse, x).argmax(1) == pruned(x).argmax(1))
"""
from __future__ import annotations

import numpy as np

#: Network input: one 8x8 grey plane, pixel values 0..16 scaled to 0..1.
INPUT_SHAPE = (1, 8, 8)
N_CLASSES = 10


def _torch():
    import torch
    return torch


def digits_arrays(seed: int = 0, test_fraction: float = 0.2):
    """(x_train, y_train, x_test, y_test): float32 (N, 1, 8, 8) in [0, 1] and int64 labels.

    The split is stratified and fixed by ``seed`` (sklearn's ``train_test_split``)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                              stratify=y)
    return x_tr, y_tr, x_te, y_te


def digits_loaders(seed: int = 0, batch_size: int = 64, test_fraction: float = 0.2) -> dict:
    """``{"train": DataLoader, "test": DataLoader}`` over the fixed split; the training loader
    shuffles with a generator seeded by ``seed`` (reproducible epochs)."""
    torch = _torch()
    from torch.utils.data import DataLoader, TensorDataset

    x_tr, y_tr, x_te, y_te = digits_arrays(seed, test_fraction)
    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
                       batch_size=batch_size, shuffle=True, generator=gen)
    test = DataLoader(TensorDataset(torch.from_numpy(x_te), torch.from_numpy(y_te)),
                      batch_size=512, shuffle=False)
    return {"train": train, "test": test}


def _build():
    torch = _torch()
    nn = torch.nn

    class DigitsCNN(nn.Module):
        """conv1 1->c1 · conv2 c1->c2 · pool · conv3 c2->c3 · conv4 c3->c3 · pool · fc.

        All convs are 3x3, stride 1, padding 1, with bias, each followed by ReLU; max pools
        are 2x2. ``conv1`` (one input channel) and ``fc`` (the classifier) are what KEP
        excludes by default."""

        def __init__(self, widths=(16, 32, 64)):
            super().__init__()
            c1, c2, c3 = widths
            self.widths = tuple(widths)
            self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
            self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
            self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
            self.conv4 = nn.Conv2d(c3, c3, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(c3 * 2 * 2, N_CLASSES)

        def forward(self, x):
            relu = torch.relu
            x = relu(self.conv1(x))
            x = self.pool(relu(self.conv2(x)))
            x = relu(self.conv3(x))
            x = self.pool(relu(self.conv4(x)))
            return self.fc(torch.flatten(x, 1))

    return DigitsCNN


_CLASS = None


def DigitsCNN(widths=(16, 32, 64)):
    """The digits network (an ``nn.Module``; the class is built on first use so that importing
    this module does not import torch)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _build()
    return _CLASS(widths)


def train_digits_cnn(seed: int = 0, epochs: int = 30, lr: float = 3e-3, batch_size: int = 64,
                     widths=(16, 32, 64), threads: int | None = 2, progress: bool = False):
    """Train the digits CNN from a seeded initialisation: ``(model, loaders, accuracy)``.

    Adam with a cosine learning-rate schedule; ~3-6 s on two CPU cores. ``accuracy`` is the
    held-out (test split) top-1 accuracy in percent."""
    torch = _torch()
    from ..prune.common import evaluate, set_threads, train

    set_threads(threads)
    torch.manual_seed(seed)
    model = DigitsCNN(widths)
    loaders = digits_loaders(seed, batch_size)
    train(model, loaders["train"], epochs, lr, progress=progress, description="train digits CNN")
    model.eval()
    return model, loaders, evaluate(model, loaders["test"])


def digits_cnn(seed: int = 0):
    """Factory used by ``kepsparse prune --model digits``: an untrained DigitsCNN (seeded)."""
    torch = _torch()
    torch.manual_seed(seed)
    return DigitsCNN()


# ----------------------------------------------------------------------------- sparse run

def _maxpool2(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    return x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def sparse_logits(model, sparse_model, x, backend: str = "reference") -> np.ndarray:
    """Logits of ``model`` (a DigitsCNN) computed with the convs of ``sparse_model``
    (``kepsparse.convert(model)``), each run by kepsparse's kernels on ``backend``;
    ReLU, pooling and the classifier in NumPy. ``x``: (N, 1, 8, 8) array or tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    h = np.ascontiguousarray(x, dtype=np.float32)
    h = sparse_model["conv1"](h, backend=backend, relu=True)
    h = _maxpool2(sparse_model["conv2"](h, backend=backend, relu=True))
    h = sparse_model["conv3"](h, backend=backend, relu=True)
    h = _maxpool2(sparse_model["conv4"](h, backend=backend, relu=True))
    w = model.fc.weight.detach().cpu().numpy()
    b = model.fc.bias.detach().cpu().numpy()
    return h.reshape(h.shape[0], -1) @ w.T + b


def sparse_agreement(model, loader, backend: str = "reference", format: str = "auto",
                     sparse=None) -> dict:
    """Run ``model`` with kepsparse's kernels over every batch of ``loader``: how often the
    sparse run predicts torch's class, its accuracy, and the pattern-format byte account.
    ``sparse``: the model already converted (``kepsparse.convert(model)``, e.g. the
    ``sparse_model`` of ``prune.common.sparse_check``); None converts it here with ``format``."""
    torch = _torch()
    if sparse is None:
        from .. import convert
        sparse = convert(model, format=format)
    same = total = correct = 0
    max_err = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                x, y = batch[0], batch[1]
                ref = model(x).numpy()
                got = sparse_logits(model, sparse, x, backend=backend)
                same += int((got.argmax(1) == ref.argmax(1)).sum())
                correct += int((got.argmax(1) == y.numpy()).sum())
                total += len(y)
                max_err = max(max_err, float(np.abs(got - ref).max()))
    finally:
        model.train(was_training)
    pat = [layer.weight for layer in sparse if layer.weight.name == "pattern"]
    vb = sum(w.value_bytes for w in pat)
    return {"images": total, "same_class": same, "agreement": same / max(total, 1),
            "sparse_accuracy": 100.0 * correct / max(total, 1), "max_abs_logit_err": max_err,
            "formats": {layer.name: layer.weight.name for layer in sparse},
            "pattern_index_bytes": sum(w.index_bytes for w in pat), "pattern_value_bytes": vb,
            "pattern_index_value_ratio": sum(w.index_bytes for w in pat) / vb if vb else None,
            "library_sizes": {layer.name: layer.weight.n_patterns - 1 for layer in sparse
                              if layer.weight.name == "pattern"}}


#: Models this module offers to ``kepsparse.nets.get_model`` (name -> factory).
MODELS = {"digits": digits_cnn}
DATASETS = {"digits": digits_loaders}
