"""PyTorch checkpoints (.pt/.pth) and .safetensors files -> named numpy tensors.

Checkpoints are untrusted: ``torch.load(..., weights_only=True)`` only, so a pickle that
would run code is refused, never executed. Accepted shapes of a checkpoint: a state_dict,
or a dict holding one under "state_dict", "model_state_dict" or "model".
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import ConvertError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def _torch():
    try:
        import torch
    except ImportError:
        raise ConvertError("reading a PyTorch checkpoint needs torch: pip install torch==2.13.0") from None
    return torch


def _to_numpy(t) -> np.ndarray:
    t = t.detach().cpu()
    if t.is_floating_point() and t.dtype not in (_torch().float32, _torch().float64, _torch().float16):
        t = t.float()  # bfloat16 and friends: numpy has no such dtype
    return t.numpy()


def _weights_only_detail(message: str) -> str:
    """The informative line of torch's long weights_only error (it wraps it in advice)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "GLOBAL" in ln or ln.startswith("Unsupported")]
    return (useful[0] if useful else (lines[-1] if lines else ""))[:300]


def tensors_from_torch_file(path: Path) -> dict[str, np.ndarray]:
    torch = _torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _weights_only_detail(str(exc))
        if "GLOBAL" in detail:  # the pickle names a Python callable/class: code, not tensors
            raise ConvertError("refused: the checkpoint holds pickled Python objects other than "
                               "tensors, and kepsparse never unpickles code (weights_only=True). "
                               f"Save model.state_dict() instead. Detail: {detail}",
                               path=path) from None
        raise ConvertError(f"cannot read as a PyTorch checkpoint (corrupted or not a "
                           f"checkpoint): {detail}", path=path) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for unreadable files
        raise ConvertError(f"cannot read as a PyTorch checkpoint: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:300] if str(exc) else ''}", path=path) from None
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise ConvertError(f"expected a state_dict (a dict of tensors), found {type(obj).__name__}",
                           path=path)
    return {str(k): _to_numpy(v) for k, v in obj.items() if isinstance(v, torch.Tensor)}


def tensors_from_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = list(f.keys())
            out = {}
            for k in keys:
                try:
                    out[k] = f.get_tensor(k)
                except (TypeError, ValueError, SafetensorError):  # e.g. bfloat16: no numpy dtype
                    out[k] = None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConvertError(f"cannot read as safetensors: {exc}", path=path) from None
    missing = [k for k, v in out.items() if v is None]
    if missing:
        torch = _torch()
        from safetensors.torch import load_file
        pt = load_file(str(path))
        for k in missing:
            out[k] = _to_numpy(pt[k]) if isinstance(pt[k], torch.Tensor) else None
    return out
