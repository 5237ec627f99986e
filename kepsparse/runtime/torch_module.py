"""Torch drop-in: ``kepsparse.torch.sparsify(module)`` swaps pruned ``nn.Conv2d`` layers for
inference-only ``SparseConv2d`` modules that run kepsparse's kernels.

    import kepsparse.torch
    fast = kepsparse.torch.sparsify(model.eval())        # a copy; ``inplace=True`` to modify
    with torch.no_grad():
        y = fast(x)                                       # equals model(x) up to rounding

A Conv2d is "pruned" when its weight (or its ``torch.nn.utils.prune`` mask) keeps at most
``1 - min_sparsity`` of the positions; others stay torch convs. ``SparseConv2d`` is
inference only: it refuses inputs that require grad (run under ``torch.no_grad()`` or
``torch.inference_mode()``), CPU float tensors only (other float dtypes are computed in
float32 and cast back).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from ..convert.module import _param, conv2d_geometry
from ..errors import InputError, UnsupportedError
from ..formats import pack
from ..model import SparseConv
from .engine import ConvImpl, default_choice


class SparseConv2d(nn.Module):
    """An inference-only Conv2d whose weight is a kepsparse format object."""

    def __init__(self, layer: SparseConv, backend: str = "auto", threads: int | None = None):
        super().__init__()
        self.layer, self.backend, self.threads = layer, backend, threads
        self._impl = ConvImpl(layer, default_choice(layer, backend), threads)
        O, Cg, KH, KW = layer.weight.shape
        g = layer.geometry
        self.in_channels, self.out_channels = Cg * g.groups, O
        self.kernel_size, self.stride, self.dilation, self.groups = (KH, KW), g.stride, \
            g.dilation, g.groups

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, name: str = "conv", format: str = "auto",
                  min_sparsity: float = 0.0, backend: str = "auto", threads=None):
        geometry = conv2d_geometry(conv, name)
        weight, mask = _param(conv, "weight")
        bias, _ = _param(conv, "bias")
        fmt = pack(weight, format, mask=mask, min_sparsity=min_sparsity)
        return cls(SparseConv(name, fmt, bias, geometry), backend, threads)

    @property
    def kernel(self) -> str:
        return self._impl.label

    def extra_repr(self) -> str:
        w = self.layer.weight
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, groups={self.groups}, format={w.name}, "
                f"sparsity={w.sparsity:.1%}, kernel={self.kernel}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = self.layer.name
        if not isinstance(x, torch.Tensor):
            raise InputError(f"expected a torch.Tensor, got {type(x).__name__}", layer=name,
                             field="x")
        if torch.is_grad_enabled() and x.requires_grad:
            raise UnsupportedError("SparseConv2d is inference-only and its input requires grad: "
                                   "run under torch.no_grad() or torch.inference_mode()",
                                   layer=name, field="x")
        if x.device.type != "cpu":
            raise InputError(f"tensor on {x.device}: kepsparse runs on the CPU", layer=name,
                             field="x")
        if x.layout != torch.strided:
            raise InputError(f"{x.layout} tensors are not supported: pass a dense tensor",
                             layer=name, field="x")
        if not x.dtype.is_floating_point:
            raise InputError(f"must be a floating-point tensor, got {x.dtype}", layer=name,
                             field="x")
        dtype = x.dtype
        # shape (4-D, no empty dimension) and channels are checked by the conv's boundary
        y = torch.from_numpy(self._impl(x.detach().to(torch.float32).contiguous().numpy()))
        return y if dtype == torch.float32 else y.to(dtype)


def sparsify(module: nn.Module, min_sparsity: float = 0.5, format: str = "auto",
             backend: str = "auto", threads: int | None = None, inplace: bool = False):
    """``module`` with every pruned Conv2d (sparsity >= ``min_sparsity``) replaced by a
    ``SparseConv2d`` (a deep copy unless ``inplace``). Pruning re-parametrisations
    (``torch.nn.utils.prune``) are honoured: the mask gives the kept positions."""
    if not isinstance(module, nn.Module):
        raise InputError(f"expected a torch.nn.Module, got {type(module).__name__}",
                         field="module")
    if inplace:
        root = module
    else:  # torch.nn.utils.prune leaves a computed (non-leaf) ``weight``: copy it detached
        memo = {}
        for m in module.modules():
            for attr, t in vars(m).items():
                if isinstance(t, torch.Tensor) and not t.is_leaf:
                    memo[id(t)] = t.detach().clone()
        root = copy.deepcopy(module, memo)
    replaced = []
    for name, m in list(root.named_modules()):
        if type(m) is not nn.Conv2d:
            continue
        weight, mask = _param(m, "weight")
        kept = mask if mask is not None else weight != 0
        if 1.0 - kept.mean() < min_sparsity:
            continue
        new = SparseConv2d.from_conv(m, name or "conv", format=format, min_sparsity=0.0,
                                     backend=backend, threads=threads)
        _set_submodule(root, name, new)
        replaced.append(name)
    root.kepsparse_replaced = replaced
    return root


def _set_submodule(root, name: str, new) -> None:
    if not name:
        raise UnsupportedError("the module itself is a Conv2d: wrap it, or use "
                               "SparseConv2d.from_conv", field="module")
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


__all__ = ["SparseConv2d", "sparsify"]
