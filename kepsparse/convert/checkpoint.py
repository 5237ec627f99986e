"""PyTorch checkpoints (.pt/.pth) and .safetensors files -> named numpy tensors.

Checkpoints are untrusted: ``torch.load(..., weights_only=True)`` only, so a pickle that
would run code is refused, never executed. Accepted shapes of a checkpoint: a state_dict,
or a dict holding one under "state_dict", "model_state_dict" or "model".

Sizes declared by a file are checked against the file before anything is allocated:

- a torch checkpoint must be torch.save's zip container (PyTorch >= 1.6; the legacy
  format allocates every storage at the size its pickle declares, before reading it), and
  its entries together may not unpack to more bytes than the file holds (no zip bomb);
- every tensor must be a plain dense CPU tensor, and all of them together may not hold
  more bytes than the file: a view with zero strides or many keys viewing one storage
  would otherwise turn a kilobyte into gigabytes when copied;
- safetensors validates its own header (offsets, sizes) against the file and maps it.
"""
from __future__ import annotations

import pickle
import warnings
import zipfile
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


def _check_zip_container(path: Path) -> None:
    """Refuse a torch checkpoint that is not a zip or whose entries would unpack to more
    bytes than the file holds; reads only the zip's directory."""
    size = path.stat().st_size
    try:
        is_zip = zipfile.is_zipfile(path)
        if is_zip:
            with zipfile.ZipFile(path) as z:
                declared = sum(max(int(i.file_size), 0) for i in z.infolist())
    except Exception as exc:  # noqa: BLE001 - zipfile raises many types for a bad directory
        raise ConvertError(f"cannot read as a PyTorch checkpoint (bad zip directory): "
                           f"{type(exc).__name__}: {exc}", path=path) from None
    if not is_zip:
        raise ConvertError("cannot read as a PyTorch checkpoint: not a zip archive (torch.save's "
                           "format since PyTorch 1.6; the legacy format is not read: load and "
                           "re-save it with a current torch)", path=path)
    if declared > size:
        raise ConvertError(f"refused: the zip's entries unpack to {declared:,} bytes, more than "
                           f"the file's {size:,} (torch.save never compresses; a zip bomb?)",
                           path=path)


def _checked_tensor(torch, key: str, t, path: Path):
    """``t`` if it is a plain dense CPU tensor; else ConvertError naming the key."""
    kind = ("a nested" if t.is_nested else "a quantized" if t.is_quantized
            else f"a {str(t.layout).replace('torch.', '')}" if t.layout != torch.strided
            else f"a {t.device.type}" if t.device.type != "cpu" else None)
    if kind is not None:
        raise ConvertError(f"{kind} tensor: only plain dense tensors are read", path=path,
                           field=key)
    return t


def _numpy_of(key: str, t, path: Path) -> np.ndarray:
    try:
        return _to_numpy(t)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for odd tensors
        raise ConvertError(f"cannot convert to a NumPy array: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''}", path=path,
                           field=key) from None


def _weights_only_detail(message: str) -> str:
    """The informative line of torch's long weights_only error (it wraps it in advice)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "GLOBAL" in ln or ln.startswith("Unsupported")]
    return (useful[0] if useful else (lines[-1] if lines else ""))[:300]


def tensors_from_torch_file(path: Path) -> dict[str, np.ndarray]:
    torch = _torch()
    _check_zip_container(path)
    try:
        with warnings.catch_warnings():  # torch's notes on old tensor kinds: we judge the result
            warnings.simplefilter("ignore")
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
    tensors = {str(k): _checked_tensor(torch, str(k), v, path) for k, v in obj.items()
               if isinstance(v, torch.Tensor)}
    size = path.stat().st_size
    total = 0
    for key, t in tensors.items():  # before any copy
        total += int(t.numel()) * int(t.element_size())
        if total > size:
            raise ConvertError(f"refused: the tensors up to {key!r} hold {total:,} bytes, more "
                               f"than the file's {size:,} (tensors overlapping in storage, e.g. "
                               "zero strides or shared storages, are not read)", path=path,
                               field=key)
    return {key: _numpy_of(key, t, path) for key, t in tensors.items()}


def tensors_from_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = list(f.keys())
            out = {}
            for k in keys:
                try:
                    out[k] = f.get_tensor(k)
                # e.g. bfloat16 (TypeError) or float8 (AttributeError: numpy has no such
                # dtype): read through torch below
                except (TypeError, ValueError, AttributeError, SafetensorError):
                    out[k] = None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConvertError(f"cannot read as safetensors: {exc}", path=path) from None
    missing = [k for k, v in out.items() if v is None]
    if missing:
        torch = _torch()
        from safetensors.torch import load_file
        try:
            pt = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - e.g. a dtype torch does not have either
            raise ConvertError(f"cannot read tensor(s) {', '.join(map(repr, missing[:3]))}: "
                               f"{type(exc).__name__}: {exc}", path=path,
                               field=missing[0]) from None
        for k in missing:
            out[k] = _numpy_of(k, _checked_tensor(torch, k, pt[k], path), path)
    return out
