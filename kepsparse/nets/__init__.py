"""Reference networks defined in the project (torchvision does not install next to torch 2.13).

Every module in this package may define ``MODELS = {name: factory}`` (factory(seed=0) ->
nn.Module) and ``DATASETS = {name: loaders_factory}`` (loaders_factory(seed=0, batch_size=...)
-> {"train": DataLoader, "test": DataLoader}). ``get_model(name)`` / ``get_dataset(name)``
find them by scanning the package, so adding a network is adding a module: nothing to
register here. Importing this package does not import torch.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..errors import InputError


def _registries(attr: str) -> dict:
    found: dict = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, factory in getattr(module, attr, {}).items():
            found.setdefault(name, factory)
    return found


def model_names() -> list[str]:
    return sorted(_registries("MODELS"))


def dataset_names() -> list[str]:
    return sorted(_registries("DATASETS"))


def get_model(name: str, seed: int = 0):
    """A fresh (untrained, seeded) network by name, e.g. ``get_model("digits")``."""
    models = _registries("MODELS")
    if name not in models:
        raise InputError(f"unknown model {name!r}; known: {', '.join(sorted(models)) or 'none'} "
                         "(or pass path/to/module.py:factory)", field="model")
    return models[name](seed=seed)


def get_dataset(name: str, seed: int = 0, batch_size: int = 64) -> dict:
    """``{"train": DataLoader, "test": DataLoader}`` of a built-in dataset by name."""
    sets = _registries("DATASETS")
    if name not in sets:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(sorted(sets)) or 'none'} "
                         "(or pass path/to/module.py:loader)", field="data")
    return sets[name](seed=seed, batch_size=batch_size)


__all__ = ["get_model", "get_dataset", "model_names", "dataset_names"]
