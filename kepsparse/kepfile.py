"""The .kep file: a safetensors container plus JSON metadata. No pickle anywhere.

Header metadata (string -> string, safetensors ``__metadata__``):
    "format":  "kepsparse"           the magic
    "version": "2"                   KEP_FILE_VERSION; newer files are refused by older readers
                                     (version-1 files, which have no graph, are still read)
    "model":   JSON {"layers": [{"name", "format", "shape", "geometry" (or null),
                                 "has_bias"}, ...], "metadata": {...},
                     "graph": null or {"inputs", "outputs", "nodes", "constants"}}
Tensors: ``layers/<i>/<array>`` for each array of layer i's format (see the format's module)
and ``layers/<i>/bias`` (float32 (O,)) when it has one; ``graph/constants/<j>`` for the j-th
name of the graph's "constants" list (see ``kepsparse/runtime/graph.py``). Nothing else is
allowed. A file with a graph loads as a ``kepsparse.runtime.GraphModel`` (callable: y = m(x)),
after the graph is validated (every node input defined before use, ops known, attribute
types right, SparseConv nodes naming existing layers).

Loading validates everything (tensor set, dtypes, shapes, every index and count) before any
kernel can see it. Saving writes a temporary file beside the target and renames it over
the target, so a failed or interrupted save leaves the previous file intact.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import KepError, KepFileError
from .formats import FORMATS
from .geometry import ConvGeometry
from .model import SparseConv, SparseModel

MAGIC = "kepsparse"
KEP_FILE_VERSION = 2
READABLE_VERSIONS = ("1", "2")


def _tensor_name(i: int, array: str) -> str:
    return f"layers/{i}/{array}"


def _current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (os.umask would
    briefly set a process-wide value other threads could see)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        # mkstemp makes the file private (0600): give it the mode a plain open() would
        # (the replaced file's, else 0666 less the umask)
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_current_umask()
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save(model: SparseModel, path) -> None:
    """Write ``model`` to ``path`` (.kep) atomically."""
    from safetensors.numpy import save as st_save

    tensors: dict[str, np.ndarray] = {}
    entries = []
    for i, layer in enumerate(model):
        layer.weight.validate()
        layer.validate()
        for array_name, arr in layer.weight.arrays().items():
            tensors[_tensor_name(i, array_name)] = np.ascontiguousarray(arr)
        if layer.bias is not None:
            tensors[_tensor_name(i, "bias")] = np.ascontiguousarray(layer.bias, dtype=np.float32)
        entries.append({"name": layer.name, "format": layer.weight.name,
                        "shape": list(layer.weight.shape),
                        "geometry": None if layer.geometry is None else layer.geometry.to_json(),
                        "has_bias": layer.bias is not None})
    doc = {"layers": entries, "metadata": model.metadata, "graph": None}
    graph = getattr(model, "graph", None)
    if graph is not None:
        doc["graph"] = graph.to_json()
        for j, (name, arr) in enumerate(graph.constants.items()):
            tensors[f"graph/constants/{j}"] = np.ascontiguousarray(arr)
    header = {"format": MAGIC, "version": str(KEP_FILE_VERSION), "model": json.dumps(doc)}
    target = Path(path)
    if not target.parent.exists():
        raise KepFileError("output folder does not exist", path=target)
    atomic_write_bytes(target, st_save(tensors, metadata=header))


def _read_container(path: Path):
    """(header metadata, tensors) of a safetensors file, or KepFileError."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if not path.exists():
        raise KepFileError("no such file", path=path)
    if not path.is_file():
        raise KepFileError("not a regular file", path=path)
    data = path.read_bytes()
    if len(data) < 8:
        raise KepFileError(f"truncated: {len(data)} bytes, not a .kep file", path=path)
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise KepFileError(f"truncated or not a .kep file: header claims {header_len} bytes, "
                           f"file has {len(data) - 8}", path=path)
    try:
        header = json.loads(data[8:8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise KepFileError("not a .kep file (header is not JSON)", path=path) from None
    if not isinstance(header, dict):
        raise KepFileError("not a .kep file (header is not a JSON object)", path=path)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != MAGIC:
        raise KepFileError(f"not a .kep file (no '{MAGIC}' magic in the header)", path=path)
    version = meta.get("version")
    if version not in READABLE_VERSIONS:
        raise KepFileError(f"file format version {version!r} is not supported (this kepsparse "
                           f"reads versions {', '.join(READABLE_VERSIONS)})", path=path,
                           field="version")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise KepFileError(f"corrupted tensor data: {exc}", path=path) from None
    return meta, tensors


def load(path, tune: bool = False, threads: int | None = None) -> SparseModel:
    """Read and fully validate a .kep file.

    ``tune=True`` (a file with a graph): unless the file already caches a per-layer kernel
    choice measured with ``threads``, measure one now (``kepsparse.runtime.tune``) and cache
    it in the file (atomic rewrite; skipped silently if the file is not writable).
    """
    model = _load(Path(path))
    if tune and getattr(model, "graph", None) is not None:
        cached = model.metadata.get("kernel_choice")  # untrusted: a cache, maybe garbage
        cached = cached if isinstance(cached, dict) else {}
        if not isinstance(cached.get("layers"), dict) or not cached["layers"] \
                or cached.get("threads") != threads:
            model.tune(threads=threads)
            if os.access(path, os.W_OK) and os.access(Path(path).parent or ".", os.W_OK):
                save(model, path)
    return model


def _load(path: Path) -> SparseModel:
    meta, tensors = _read_container(path)
    try:
        doc = json.loads(meta.get("model", ""))
        entries = doc["layers"]
        if not isinstance(entries, list):
            raise TypeError("'layers' is not a list")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise KepFileError(f"model description is unreadable: {exc}", path=path,
                           field="model") from None
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise KepFileError("metadata is not an object", path=path, field="metadata")
    graph_doc = doc.get("graph") if meta.get("version") != "1" else None
    if graph_doc is not None:
        from .runtime.engine import GraphModel
        model = GraphModel(metadata=metadata)
    else:
        model = SparseModel(metadata=metadata)
    used: set[str] = set()
    for i, entry in enumerate(entries):
        try:
            layer = _load_layer(i, entry, tensors, used)
        except KepError as exc:
            raise KepFileError(exc.message, path=path, layer=exc.layer or _entry_name(entry, i),
                               field=exc.field) from None
        if layer.name in model.layers:
            raise KepFileError("duplicate layer name", path=path, layer=layer.name)
        model.add(layer)
    if graph_doc is not None:
        from .runtime.graph import graph_from_json
        model.graph = graph_from_json(graph_doc, tensors, used, model.layers, path)
    extra = sorted(set(tensors) - used)
    if extra:
        raise KepFileError(f"tensors not described by any layer: {', '.join(extra[:5])}",
                           path=path, field="tensors")
    return model


def _entry_name(entry, i: int) -> str:
    return entry.get("name", f"#{i}") if isinstance(entry, dict) else f"#{i}"


def _load_layer(i: int, entry, tensors: dict, used: set) -> SparseConv:
    if not isinstance(entry, dict):
        raise KepFileError("layer entry is not an object", layer=f"#{i}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise KepFileError("layer has no name", layer=f"#{i}", field="name")
    fmt_name = entry.get("format")
    if not isinstance(fmt_name, str) or fmt_name not in FORMATS:
        raise KepFileError(f"unknown format {fmt_name!r}", layer=name, field="format")
    cls = FORMATS[fmt_name]
    prefix = f"layers/{i}/"
    arrays = {k[len(prefix):]: v for k, v in tensors.items()
              if k.startswith(prefix) and k != prefix + "bias"}
    used.update(prefix + k for k in arrays)
    weight = cls.from_arrays(entry.get("shape", ()), arrays)  # validates every invariant
    extra = set(arrays) - set(weight.arrays())
    if extra:
        raise KepFileError(f"unexpected arrays {sorted(extra)}", layer=name, field="tensors")
    bias = None
    if entry.get("has_bias"):
        if prefix + "bias" not in tensors:
            raise KepFileError("missing", layer=name, field="bias")
        bias = tensors[prefix + "bias"]
        used.add(prefix + "bias")
    geometry = None
    if entry.get("geometry") is not None:
        try:
            geometry = ConvGeometry.from_json(entry["geometry"])
        except (KeyError, TypeError, ValueError) as exc:
            raise KepFileError(f"unreadable: {exc}", layer=name, field="geometry") from None
    layer = SparseConv(name, weight, bias, geometry)
    layer.validate()  # bias dtype/shape/finiteness, groups vs O
    return layer
