"""From named tensors (a state_dict's contents) to sparse conv layers.

Recognised, for every prefix ``p`` (``p`` may be empty):
    p.weight                      4-D floating: a conv weight; its zeros are the pruned positions
    p.weight_orig + p.weight_mask torch.nn.utils.prune: weight = orig * mask, kept positions = mask
    p.bias  (or p.bias_orig + p.bias_mask)   1-D of length O: the conv's bias
Geometry (stride, padding, ...) is not in a state_dict: such layers have geometry None.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConvertError, KepError
from ..formats import pack
from ..formats.base import check_shape
from ..model import SparseConv, SparseModel


def _split(key: str) -> tuple[str, str]:
    prefix, _, leaf = key.rpartition(".")
    return prefix, leaf


def _is_float(dtype: np.dtype) -> bool:
    # ml_dtypes (imported by onnx) registers bfloat16/float8 as NumPy dtypes that are not
    # np.floating subtypes; they convert to float32 exactly.
    return np.issubdtype(dtype, np.floating) or dtype.name.startswith(("bfloat16", "float8"))


def _float_array(tensors, key, source) -> np.ndarray:
    a = tensors[key]
    if not isinstance(a, np.ndarray):
        raise ConvertError(f"tensor {key!r} could not be read", path=source, field=key)
    if not _is_float(a.dtype):
        raise ConvertError(f"tensor {key!r} has dtype {a.dtype}; conv weights must be floating "
                           "point (quantized checkpoints are not supported)", path=source,
                           field=key)
    return np.asarray(a, dtype=np.float32)


def layers_from_tensors(tensors: dict[str, np.ndarray], source, format: str, min_sparsity: float,
                        max_patterns: int | None) -> SparseModel:
    model = SparseModel()
    for key in tensors:  # source order
        prefix, leaf = _split(key)
        if leaf in ("weight_orig", "weight") and getattr(tensors[key], "ndim", 0) == 4:
            try:  # before any copy: positive dims, fewer than 2**31 elements
                check_shape(tensors[key].shape)
            except KepError as exc:
                raise ConvertError(exc.message, path=source, layer=prefix or "conv",
                                   field=key) from None
        if leaf == "weight_orig" and getattr(tensors[key], "ndim", 0) == 4:
            mask_key = f"{prefix}.weight_mask" if prefix else "weight_mask"
            if mask_key not in tensors:
                raise ConvertError(f"{key!r} has no matching {mask_key!r}", path=source,
                                   layer=prefix or key, field="weight_mask")
            orig = _float_array(tensors, key, source)
            mask = tensors[mask_key]
            if not isinstance(mask, np.ndarray) or mask.shape != orig.shape:
                raise ConvertError(f"mask shape {mask.shape} != weight shape {orig.shape}",
                                   path=source, layer=prefix, field="weight_mask")
            mask = mask != 0
            weight = np.where(mask, orig, np.float32(0))
        elif leaf == "weight" and getattr(tensors[key], "ndim", 0) == 4:
            weight, mask = _float_array(tensors, key, source), None
        else:
            continue
        name = prefix or "conv"
        try:
            fmt = pack(weight, format, mask=mask, min_sparsity=min_sparsity,
                       max_patterns=max_patterns)
        except KepError as exc:
            raise ConvertError(exc.message, path=source, layer=name, field=exc.field) from None
        model.add(SparseConv(name, fmt, _bias(tensors, prefix, fmt.shape[0], source), None))
    if not len(model):
        raise ConvertError("no convolution weights found (no 4-D '*.weight' or "
                           "'*.weight_orig' tensors)", path=source)
    return model


def _bias(tensors, prefix, n_out, source):
    def key(leaf):
        return f"{prefix}.{leaf}" if prefix else leaf
    if key("bias_orig") in tensors and key("bias_mask") in tensors:
        b = _float_array(tensors, key("bias_orig"), source)
        mask = tensors[key("bias_mask")]
        if not isinstance(mask, np.ndarray) or mask.shape != b.shape:
            raise ConvertError(f"mask shape {getattr(mask, 'shape', None)} != bias shape {b.shape}",
                               path=source, layer=prefix, field="bias_mask")
        b = b * (mask != 0)
    elif key("bias") in tensors:
        b = _float_array(tensors, key("bias"), source)
    else:
        return None
    if b.shape != (n_out,):
        raise ConvertError(f"bias shape {b.shape} does not match {n_out} output channels",
                           path=source, layer=prefix, field="bias")
    if not np.all(np.isfinite(b)):
        raise ConvertError("bias holds NaN or Inf", path=source, layer=prefix, field="bias")
    return b.astype(np.float32)
