"""Machinery shared by every pruning method: models and data from specs, checkpoints in and
out, evaluation, masked training, progress bars, plots. Params/FLOPs are counted by
``kepsparse.nets.flops.count`` (the one counter).

Specs accepted on the command line (and by the functions here):
    model   NAME (a network of ``kepsparse.nets``, e.g. ``digits``) or ``path/to/file.py:factory``
            (a callable returning an ``nn.Module``; called with no argument)
    data    NAME (``digits``) or ``path/to/file.py:loader`` (a callable returning
            ``{"train": DataLoader, "test": DataLoader}`` or a ``(train, test)`` pair)

FLOPs follow the literature's convention (``kepsparse.nets.flops``): multiply-accumulates of
conv and linear layers, conv/linear bias additions included; after pruning only the non-zero
weights count.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np

from ..nets.tracing import traced_forward

from ..errors import ConvertError, InputError, UnsupportedError


def _torch():
    try:
        import torch
    except ImportError:
        raise UnsupportedError("pruning needs torch: pip install torch==2.13.0") from None
    return torch


def set_threads(threads: int | None = 2) -> None:
    """Cap torch's intra-op threads (the machines are small and shared)."""
    if threads:
        torch = _torch()
        torch.set_num_threads(max(1, int(threads)))


# ----------------------------------------------------------------------------- specs

def _load_callable(spec: str, what: str):
    path, _, attr = spec.rpartition(":")
    if not path or not attr:
        raise InputError(f"expected NAME or path/to/file.py:callable, got {spec!r}", field=what)
    file = Path(path)
    if not file.is_file():
        raise InputError(f"no such file {path!r}", field=what)
    mod_name = f"_kepsparse_user_{what}_{abs(hash(str(file.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(mod_name, file)
    if module_spec is None or module_spec.loader is None:
        raise InputError(f"cannot import {path!r} as a Python module", field=what)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's module failed: say so in one line
        raise InputError(f"importing {path!r} failed: {type(exc).__name__}: {exc}", field=what) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise InputError(f"{path!r} has no callable {attr!r}", field=what)
    return fn


def load_model(spec, seed: int = 0):
    """An ``nn.Module`` from a spec (see module doc) or the module itself."""
    torch = _torch()
    if isinstance(spec, torch.nn.Module):
        return spec
    spec = str(spec)
    if ".py:" in spec:
        model = _call_spec(spec, "model", "factory")
    else:
        from ..nets import get_model
        torch.manual_seed(seed)
        model = get_model(spec, seed=seed)
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{spec!r} returned a {type(model).__name__}, not a torch.nn.Module",
                         field="model")
    return model


def _call_spec(spec: str, field: str, what: str):
    """Load ``module.py:callable`` and call it; its failure is an InputError naming the spec."""
    fn = _load_callable(spec, field)
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - user code: any failure is bad input
        raise InputError(f"the {what} {spec!r} failed: {type(exc).__name__}: {exc}",
                         field=field) from None


def load_data(spec, seed: int = 0, batch_size: int = 64) -> dict:
    """``{"train": DataLoader, "test": DataLoader}`` from a spec, a dict or a pair."""
    if isinstance(spec, (str, os.PathLike)):
        spec = str(spec)
        if ".py:" in spec:
            data = _call_spec(spec, "data", "loader")
        else:
            from ..nets import get_dataset
            data = get_dataset(spec, seed=seed, batch_size=batch_size)
    else:
        data = spec
    return as_loaders(data)


def as_loaders(data) -> dict:
    if isinstance(data, dict):
        missing = [k for k in ("train", "test") if k not in data]
        if missing:
            raise InputError(f"the loaders dict lacks {', '.join(missing)!s} (needs 'train' and "
                             "'test')", field="data")
        return {"train": data["train"], "test": data["test"]}
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return {"train": data[0], "test": data[1]}
    raise InputError(f"expected {{'train': loader, 'test': loader}} or (train, test), got "
                     f"{type(data).__name__}", field="data")


# ----------------------------------------------------------------------------- checkpoints

def read_state_dict(path) -> dict:
    """A state_dict from a .pt file (``weights_only=True``), with ``torch.nn.utils.prune``
    pairs ``X_orig``/``X_mask`` folded into ``X = X_orig * X_mask``."""
    from ..convert.checkpoint import tensors_from_torch_file
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise ConvertError("no such checkpoint file", path=path)
    arrays = tensors_from_torch_file(path)
    out = {}
    for k, v in arrays.items():
        if k.endswith("_mask") and k[:-5] + "_orig" in arrays:
            continue
        if k.endswith("_orig") and k[:-5] + "_mask" in arrays:
            base = k[:-5]
            out[base] = torch.from_numpy(np.where(arrays[base + "_mask"] != 0, v, 0).astype(v.dtype))
            continue
        out[k] = torch.from_numpy(np.array(v))
    return out


def load_checkpoint(model, path) -> None:
    """Load ``path`` into ``model``; ConvertError naming the missing/unexpected/mis-shaped keys."""
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {', '.join(missing[:5])}"
                         + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {', '.join(unexpected[:5])}"
                         + (" ..." if len(unexpected) > 5 else ""))
        raise ConvertError("checkpoint does not match the model: " + "; ".join(parts),
                           path=path, field=(missing or unexpected)[0])
    for k, t in expected.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise ConvertError(f"checkpoint does not match the model: shape "
                               f"{tuple(state[k].shape)} in the checkpoint, {tuple(t.shape)} in "
                               "the model", path=path, field=k)
    model.load_state_dict(state, strict=True)


def save_checkpoint(model, path, masks: dict | None = None, prune_masks: bool = False) -> None:
    """Save ``model.state_dict()`` (pruned weights are exact zeros). With ``prune_masks`` the
    masked layers are saved ``torch.nn.utils.prune``-style (``weight_orig``/``weight_mask``)."""
    torch = _torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if prune_masks and masks:
        for name, m in masks.items():
            key = f"{name}.weight"
            w = state.pop(key)
            state[f"{key}_orig"] = w
            state[f"{key}_mask"] = torch.as_tensor(np.asarray(m), dtype=w.dtype)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def write_json(obj, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------- model facts

def conv_layers(model) -> dict:
    """name -> ``nn.Conv2d`` in module order."""
    torch = _torch()
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


def weight_layers(model) -> dict:
    """name -> Conv2d or Linear in module order."""
    torch = _torch()
    return {n: m for n, m in model.named_modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}


def example_input(loader):
    """The first batch's inputs (one sample) from a DataLoader."""
    batch = next(iter(loader))
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return x[:1]


def evaluate(model, loader, max_batches: int | None = None) -> float:
    """Top-1 accuracy in percent."""
    torch = _torch()
    was_training = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = batch[0], batch[1]
            correct += int((model(x).argmax(1) == y).sum())
            total += int(y.numel())
    model.train(was_training)
    return 100.0 * correct / max(total, 1)


# ----------------------------------------------------------------------------- masked training

class MaskGuard:
    """Keeps the weights of masked layers exactly zero outside their masks while training:
    gradients are multiplied by the mask (hook) and ``apply()`` re-zeroes the weights after
    every optimizer step (so momentum or weight decay cannot revive a pruned element)."""

    def __init__(self, model, masks: dict):
        torch = _torch()
        layers = dict(model.named_modules())
        self.pairs = []
        self.hooks = []
        for name, m in masks.items():
            w = layers[name].weight
            mt = torch.as_tensor(np.asarray(m), dtype=w.dtype, device=w.device)
            self.pairs.append((w, mt))
            self.hooks.append(w.register_hook(lambda g, mt=mt: g * mt))
        self.apply()

    def apply(self) -> None:
        torch = _torch()
        with torch.no_grad():
            for w, mt in self.pairs:
                w.mul_(mt)

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks = []


def make_optimizer(params, name: str, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
    torch = _torch()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise InputError(f"unknown optimizer {name!r}; choose sgd or adam", field="optimizer")


def train(model, loader, epochs: int, lr: float = 3e-3, seed: int | None = None,
          progress: bool = False, description: str = "train") -> None:
    """Plain supervised training (Adam, cosine-annealed learning rate, cross-entropy): used to
    train a model from scratch when no checkpoint is given."""
    torch = _torch()
    if seed is not None:
        torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * len(loader)))
    loss_fn = torch.nn.CrossEntropyLoss()
    bar = progress_bar(epochs, description, progress)
    try:
        for _ in range(int(epochs)):
            model.train()
            for batch in loader:
                opt.zero_grad()
                loss_fn(model(batch[0]), batch[1]).backward()
                opt.step()
                sched.step()
            bar.advance()
    finally:
        bar.close()
    model.eval()


def copy_model(model):
    return copy.deepcopy(model)


# ----------------------------------------------------------------------------- progress

class progress_bar:
    """A rich progress bar (or nothing when disabled): ``advance(n)``, ``note(text)``, ``close()``."""

    def __init__(self, total: int, description: str, enabled: bool = True):
        self._p = None
        if not enabled:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)
        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TextColumn("{task.fields[note]}"), transient=False)
        self._p.start()
        self._task = self._p.add_task(description, total=total, note="")

    def advance(self, n: int = 1) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)

    def note(self, text: str) -> None:
        if self._p is not None:
            self._p.update(self._task, note=text)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None


def finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# ----------------------------------------------------------------------------- sparse check

def sparse_check(model, x, backend: str = "reference", format: str = "auto",
                 max_patterns: int | None = None) -> dict:
    """Convert ``model`` with ``kepsparse.convert`` and run every Conv2d with kepsparse's
    kernels on the input torch gives it for batch ``x``: formats, bytes and the largest
    deviation from torch per layer. ``pattern_index_value_ratio`` is index bytes over value
    bytes summed over the layers stored in the pattern format."""
    torch = _torch()
    from .. import convert

    sparse = convert(model, format=format, max_patterns=max_patterns)
    convs = conv_layers(model)
    seen = {}
    traced_forward(model, x, {m: (lambda mod, inp, out, n=n: seen.__setitem__(n, (inp[0], out)))
                              for n, m in convs.items()})
    layers = {}
    for n, (inp, out) in seen.items():
        layer = sparse[n or "conv"]
        y = layer(inp.detach().cpu().numpy(), backend=backend)
        ref = out.detach().cpu().numpy()
        err = float(np.abs(y - ref).max()) if y.size else 0.0
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        w = layer.weight
        layers[n] = {"format": w.name, "nnz": w.nnz, "sparsity": round(w.sparsity, 6),
                     "value_bytes": w.value_bytes, "index_bytes": w.index_bytes,
                     "max_abs_err": err, "max_abs_out": scale}
        if w.name == "pattern":
            layers[n]["library_size"] = w.n_patterns - 1
    pat = [r for r in layers.values() if r["format"] == "pattern"]
    vb = sum(r["value_bytes"] for r in pat)
    return {"backend": backend, "layers": layers,
            "value_bytes": sum(r["value_bytes"] for r in layers.values()),
            "index_bytes": sum(r["index_bytes"] for r in layers.values()),
            "pattern_index_value_ratio": (sum(r["index_bytes"] for r in pat) / vb) if vb else None,
            "max_abs_err": max((r["max_abs_err"] for r in layers.values()), default=0.0),
            "sparse_model": sparse}
