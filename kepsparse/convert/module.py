"""A live ``torch.nn.Module`` -> layers, with each Conv2d's geometry.

A Conv2d under ``torch.nn.utils.prune`` has ``weight_orig`` and ``weight_mask``: the mask
gives the kept positions. Conv1d/Conv3d/ConvTranspose are not Conv2d and are listed in the
model metadata as skipped.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConvertError, KepError, UnsupportedError
from ..formats import pack
from ..geometry import ConvGeometry
from ..model import SparseConv, SparseModel


def conv2d_geometry(m, name: str) -> ConvGeometry:
    if m.padding_mode != "zeros":
        raise UnsupportedError(f"padding_mode={m.padding_mode!r} (only 'zeros' is supported)",
                               layer=name, field="padding_mode")
    KH, KW = m.kernel_size
    if m.padding == "valid":
        pad = (0, 0, 0, 0)
    elif m.padding == "same":  # torch puts the odd extra row/column at the bottom/right
        th, tw = m.dilation[0] * (KH - 1), m.dilation[1] * (KW - 1)
        pad = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    else:
        pad = (m.padding[0], m.padding[0], m.padding[1], m.padding[1])
    return ConvGeometry.make(m.stride, pad, m.dilation, m.groups)


def _param(m, base: str):
    """(value, mask or None) of a (possibly pruned) parameter as numpy."""
    if hasattr(m, base + "_orig") and hasattr(m, base + "_mask"):
        mask = getattr(m, base + "_mask").detach().cpu().numpy() != 0
        orig = getattr(m, base + "_orig").detach().cpu().float().numpy()
        return np.where(mask, orig, np.float32(0)), mask
    value = getattr(m, base, None)
    return (None, None) if value is None else (value.detach().cpu().float().numpy(), None)


def layers_from_module(module, source, format: str, min_sparsity: float,
                       max_patterns: int | None) -> SparseModel:
    import torch.nn as nn

    model = SparseModel()
    skipped = []
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            name = name or "conv"
            geometry = conv2d_geometry(m, name)
            weight, mask = _param(m, "weight")
            bias, _ = _param(m, "bias")
            try:
                fmt = pack(weight, format, mask=mask, min_sparsity=min_sparsity,
                           max_patterns=max_patterns)
            except KepError as exc:
                raise ConvertError(exc.message, path=source, layer=name, field=exc.field) from None
            model.add(SparseConv(name, fmt, bias, geometry))
        elif isinstance(m, (nn.Conv1d, nn.Conv3d, nn.ConvTranspose2d)):
            skipped.append({"name": name, "type": type(m).__name__})
    if not len(model):
        raise ConvertError("the module has no torch.nn.Conv2d layers", path=source)
    if skipped:
        model.metadata["skipped_layers"] = skipped
    return model
