"""Helpers shared by the end-to-end benchmark and the tests: KEP pattern masks by magnitude,
pruning a torch network in place, and exporting it to ONNX offline.

``kep_mask(w, sparsity)`` builds a KEP mask the way ``kepsparse.testing.make_kep_weight``
shapes weights: every kept kernel plane keeps ``keep`` positions chosen from a library of
``n_patterns`` patterns (the most frequent top-``keep`` magnitude position sets of the layer),
each plane takes the library pattern that keeps the most magnitude, and the planes with the
least kept magnitude are emptied until the layer reaches ``sparsity``.
"""
from __future__ import annotations

import numpy as np


def kep_mask(w: np.ndarray, sparsity: float, keep: int = 2, n_patterns: int = 8) -> np.ndarray:
    O, C, KH, KW = w.shape
    k = KH * KW
    a = np.abs(w.reshape(O * C, k)).astype(np.float64)
    if k == 1:  # a 1x1 kernel: element pruning is plane pruning
        thr = np.quantile(a[:, 0], sparsity) if sparsity > 0 else -1
        return (a[:, 0] > thr).reshape(O, C, 1, 1) if sparsity > 0 else np.ones(w.shape, bool)
    keep = min(keep, k)
    if (1 - sparsity) * k > keep:  # need more than `keep` per plane to reach the target
        keep = int(np.ceil((1 - sparsity) * k))
    top = np.argsort(-a, axis=1)[:, :keep]
    codes = np.zeros(len(a), np.int64)
    for j in range(keep):
        codes |= np.int64(1) << top[:, j]
    uniq, counts = np.unique(codes, return_counts=True)
    library = uniq[np.argsort(-counts)][:n_patterns]
    lib_masks = ((library[:, None] >> np.arange(k)) & 1).astype(bool)  # (P, k)
    scores = a @ lib_masks.T.astype(np.float64)  # kept magnitude per (plane, pattern)
    choice = np.argmax(scores, axis=1)
    mask = lib_masks[choice]
    kept_norm = scores[np.arange(len(a)), choice]
    planes_to_keep = int(round((1 - sparsity) * k * len(a) / keep))
    planes_to_keep = min(max(planes_to_keep, 0), len(a))
    order = np.argsort(-kept_norm, kind="stable")
    alive = np.zeros(len(a), bool)
    alive[order[:planes_to_keep]] = True
    mask &= alive[:, None]
    return mask.reshape(O, C, KH, KW)


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
