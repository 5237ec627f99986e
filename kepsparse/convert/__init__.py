"""``kepsparse.convert``: pruned models of every supported kind -> ``SparseModel``.

One module per input kind: ``checkpoint`` (.pt/.pth, .safetensors), ``onnx_model`` (.onnx or
an ``onnx.ModelProto``), ``module`` (a live ``torch.nn.Module``); ``tensors`` turns named
tensors into layers. Every input is validated before anything is packed.
"""
from __future__ import annotations

import os
from pathlib import Path

from .. import __version__
from ..errors import ConvertError, KepError
from ..formats import DEFAULT_MIN_SPARSITY, FORMATS
from ..model import SparseModel

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def _kind_of_path(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return "torch-checkpoint"
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == ".onnx":
        return "onnx"
    with open(path, "rb") as f:  # no telling suffix: sniff
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "torch-checkpoint"  # torch.save's zip container
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise ConvertError("unknown input kind: expected .pt/.pth (PyTorch state_dict), "
                       ".safetensors or .onnx", path=path)


def convert(source, format: str = "auto", min_sparsity: float = DEFAULT_MIN_SPARSITY,
            max_patterns: int | None = None) -> SparseModel:
    """Convert a pruned model to a ``SparseModel``.

    ``source``: a path (.pt/.pth state_dict incl. torch.nn.utils.prune masks, .safetensors,
    .onnx), an ``onnx.ModelProto`` or a ``torch.nn.Module``. ``format``: "auto" (per layer:
    dense below ``min_sparsity``, else the most compact exact sparse format) or a format name.
    ``max_patterns`` bounds the pattern library per layer.
    """
    if format != "auto" and format not in FORMATS:
        raise ConvertError(f"unknown format {format!r}; choose from auto, {', '.join(FORMATS)}",
                           field="format")
    if not 0.0 <= float(min_sparsity) <= 1.0:
        raise ConvertError(f"min_sparsity must be in [0, 1], got {min_sparsity}", field="min_sparsity")
    opts = dict(format=format, min_sparsity=float(min_sparsity), max_patterns=max_patterns)
    try:
        model, desc, source_kind = _dispatch(source, opts)
    except KepError as exc:  # every error names the source, whichever converter raised it
        raise exc.located(path=_describe(source)) from None
    model.metadata.update({"source": desc, "source_kind": source_kind,
                           "kepsparse_version": __version__})
    return model


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return "<onnx model>" if type(source).__name__ == "ModelProto" else f"<{type(source).__name__}>"


def _dispatch(source, opts):
    """(model, description, kind) from the converter for ``source``'s kind."""
    desc = _describe(source)
    if type(source).__module__.split(".")[0] == "onnx" and type(source).__name__ == "ModelProto":
        from .onnx_model import layers_from_onnx
        return layers_from_onnx(source, desc, **opts), desc, "onnx"
    if _is_torch_module(source):
        from .module import layers_from_module
        return layers_from_module(source, desc, **opts), desc, "module"
    if not isinstance(source, (str, os.PathLike)):
        raise ConvertError(f"cannot convert a {type(source).__name__}: pass a file path, an "
                           "onnx.ModelProto or a torch.nn.Module")
    path = Path(source)
    if not path.exists():
        raise ConvertError("no such file", path=path)
    if not path.is_file():
        raise ConvertError("not a regular file", path=path)
    kind = _kind_of_path(path)
    if kind == "onnx":
        from .onnx_model import layers_from_onnx, load_onnx
        return layers_from_onnx(load_onnx(path), path, **opts), desc, kind
    from .checkpoint import tensors_from_safetensors, tensors_from_torch_file
    from .tensors import layers_from_tensors
    read = tensors_from_torch_file if kind == "torch-checkpoint" else tensors_from_safetensors
    return layers_from_tensors(read(path), path, **opts), desc, kind


def _is_torch_module(obj) -> bool:
    import sys
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


__all__ = ["convert"]
