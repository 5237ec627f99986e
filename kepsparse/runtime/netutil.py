"""Helpers shared by the end-to-end benchmark and the tests: KEP pattern masks by magnitude,
pruning a torch network in place, and exporting it to ONNX offline.

``kep_mask(w, sparsity)`` is KEP's prior-knowledge mask selection
(``kepsparse.prune.masks.select_mask``, plane scope) with the benchmark's shape: ``keep``
positions per kept plane (raised when the rate needs more) from a library of ``n_patterns``.
"""
from __future__ import annotations

import numpy as np


def kep_mask(w: np.ndarray, sparsity: float, keep: int = 2, n_patterns: int = 8) -> np.ndarray:
    from ..prune.masks import select_mask
    area = w.shape[2] * w.shape[3]
    keep = max(min(keep, area), int(np.ceil((1 - sparsity) * area)))
    return select_mask(w, sparsity, scope="plane", n_patterns=n_patterns,
                       keep_per_pattern=keep).mask


def kep_prune_(module, sparsity: float, keep: int = 2, n_patterns: int = 8,
               skip_first: bool = True, prune_1x1: bool = False) -> dict:
    """Zero the weights of ``module``'s Conv2d layers with KEP masks, in place.

    The first conv stays dense (``skip_first``), Linear layers always do; 1x1 convs stay
    dense unless ``prune_1x1``. Returns {layer name: achieved sparsity}.
    """
    import torch
    import torch.nn as nn
    out = {}
    first = True
    with torch.no_grad():
        for name, m in module.named_modules():
            if not isinstance(m, nn.Conv2d):
                continue
            if first and skip_first:
                first = False
                continue
            first = False
            if m.kernel_size == (1, 1) and not prune_1x1:
                continue
            w = m.weight.detach().cpu().numpy()
            mask = kep_mask(w, sparsity, keep, n_patterns)
            m.weight.mul_(torch.from_numpy(mask.astype(np.float32)))
            out[name] = 1 - mask.mean()
    return out


def export_onnx(module, input_shape, path, opset: int = 17, batch: int = 1) -> None:
    """Export ``module`` (eval mode) to ONNX with a dynamic batch dimension, offline.

    Uses torch's TorchScript exporter (``dynamo=False``): the default dynamo exporter of
    torch 2.13 needs the ``onnxscript`` package, which is not installed here. The IR version
    is capped at 13 for onnxruntime 1.31.
    """
    import io
    import warnings

    import onnx
    import torch
    module = module.eval()
    x = torch.zeros((batch, *input_shape))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), buf, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    proto = onnx.load_from_string(buf.getvalue())
    proto.ir_version = min(proto.ir_version, 13)
    onnx.save(proto, str(path))
