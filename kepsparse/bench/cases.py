"""Benchmark cases: real layer shapes (data files) x sparsity structure x sparsity x batch x threads.

Layer shapes live in ``kepsparse/bench/shapes/*.json`` (one file per network; the single home
of that data, so an installed wheel has it too). A file holds::

    {"network": "resnet18", "dataset": "ImageNet", "input_size": [224, 224],
     "description": "...",
     "layers": [{"name": "layer1", "in_channels": 64, "out_channels": 64, "in_size": [56, 56],
                 "kernel": [3, 3], "stride": 1, "padding": 1,
                 "members": ["layer1.0.conv1", ...], "count": 4}, ...]}

``count`` (default: the number of ``members``) is how many layers of the network have that
shape; the benchmark times each distinct shape once.

Sparsity structures (``make_weight``), each generated to hit the requested sparsity exactly
(up to rounding to whole planes / elements):

- ``kep``: every kept plane keeps ``k`` of the KH*KW positions (4 of 9 for 3x3, more when the
  density asks for it) following one of a library of <= 8 patterns; the remaining density is
  reached by emptying whole planes.
- ``filter``: filter-shared positions: every plane of filter ``o`` keeps the same positions
  (``k`` = the fewest that reach the density), plus empty planes for the rest.
- ``random``: unstructured, exactly round(density * size) positions chosen uniformly.
"""
from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, UnsupportedError

SHAPES_DIR = Path(__file__).resolve().parent / "shapes"
STRUCTURES = ("kep", "filter", "random")
DEFAULT_SPARSITIES = (0.5, 0.8, 0.9, 0.95)
DEFAULT_BATCHES = (1, 8)
DEFAULT_THREADS = (1, 2)
KEP_LIBRARY = 8          # patterns in the KEP library
KEP_KEEP_3x3 = 4         # kept positions per plane for 3x3 kernels


@dataclass(frozen=True)
class LayerShape:
    network: str
    name: str
    in_channels: int
    out_channels: int
    in_size: tuple[int, int]
    kernel: tuple[int, int]
    stride: int
    padding: int
    members: tuple[str, ...] = ()
    count: int = 1

    @property
    def id(self) -> str:
        return f"{self.network}/{self.name}"

    @property
    def out_size(self) -> tuple[int, int]:
        (H, W), (KH, KW), s, p = self.in_size, self.kernel, self.stride, self.padding
        return (H + 2 * p - KH) // s + 1, (W + 2 * p - KW) // s + 1

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels, *self.kernel)

    def describe(self) -> str:
        (H, W), (KH, KW) = self.in_size, self.kernel
        return (f"{self.in_channels}->{self.out_channels} {H}x{W} {KH}x{KW}"
                f"{'/s' + str(self.stride) if self.stride != 1 else ''}")

    def dense_flops(self, batch: int) -> int:
        Ho, Wo = self.out_size
        O, C, KH, KW = self.weight_shape
        return 2 * O * C * KH * KW * batch * Ho * Wo

    def to_json(self) -> dict:
        d = asdict(self)
        d["in_size"], d["kernel"], d["members"] = list(self.in_size), list(self.kernel), list(self.members)
        return d


def _field(layer: dict, key: str, where: str, path) -> object:
    if key not in layer:
        raise InputError(f"{where}: missing", path=path, field=key)
    return layer[key]


def _pos_int(value, key, where, path, minimum=1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{where}: must be an integer >= {minimum}, got {value!r}", path=path, field=key)
    return value


def _pair(value, key, where, path) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if not isinstance(value, list) or len(value) != 2:
        raise InputError(f"{where}: must be an int or a list of 2 ints, got {value!r}", path=path, field=key)
    return tuple(_pos_int(v, key, where, path) for v in value)


def load_shape_file(path) -> list[LayerShape]:
    """The layers of one shape file, validated (files given with ``--shapes`` are untrusted)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("shape file not found", path=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not a readable JSON shape file: {exc}", path=path) from None
    if not isinstance(doc, dict):
        raise InputError("must be a JSON object with 'network' and 'layers'", path=path)
    network = doc.get("network")
    if not isinstance(network, str) or not network:
        raise InputError("must be a non-empty string", path=path, field="network")
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers:
        raise InputError("must be a non-empty list", path=path, field="layers")
    out, seen = [], set()
    for i, layer in enumerate(layers):
        where = f"layers[{i}]"
        if not isinstance(layer, dict):
            raise InputError(f"{where}: must be an object", path=path, field="layers")
        name = _field(layer, "name", where, path)
        if not isinstance(name, str) or not name or name in seen:
            raise InputError(f"{where}: must be a unique non-empty string, got {name!r}",
                             path=path, field="name")
        seen.add(name)
        members = layer.get("members", [name])
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise InputError(f"{where}: must be a list of strings", path=path, field="members")
        count = _pos_int(layer.get("count", max(len(members), 1)), "count", where, path)
        ls = LayerShape(
            network=network, name=name,
            in_channels=_pos_int(_field(layer, "in_channels", where, path), "in_channels", where, path),
            out_channels=_pos_int(_field(layer, "out_channels", where, path), "out_channels", where, path),
            in_size=_pair(_field(layer, "in_size", where, path), "in_size", where, path),
            kernel=_pair(_field(layer, "kernel", where, path), "kernel", where, path),
            stride=_pos_int(layer.get("stride", 1), "stride", where, path),
            padding=_pos_int(layer.get("padding", 0), "padding", where, path, minimum=0),
            members=tuple(members), count=count)
        if min(ls.out_size) < 1:
            raise InputError(f"{where}: input {ls.in_size} with padding {ls.padding} is smaller "
                             f"than the kernel {ls.kernel}", path=path, field="in_size")
        out.append(ls)
    return out


def builtin_networks() -> dict[str, Path]:
    """Network name -> its shape file in the package."""
    return {p.stem: p for p in sorted(SHAPES_DIR.glob("*.json"))}


def load_networks(names=None, extra_files=()) -> dict[str, list[LayerShape]]:
    """Layers of the named built-in networks (all when ``names`` is None) and of extra files."""
    available = builtin_networks()
    nets: dict[str, list[LayerShape]] = {}
    for name in (available if names is None else names):
        if name not in available:
            raise UnsupportedError(f"unknown network {name!r}; built in: {', '.join(available)} "
                                   f"(or give a shape file with --shapes)", field="networks")
        nets[name] = load_shape_file(available[name])
    for f in extra_files:
        layers = load_shape_file(f)
        nets[layers[0].network] = layers
    return nets


def select_layers(nets: dict[str, list[LayerShape]], patterns=None) -> list[LayerShape]:
    """Layers whose name or ``network/name`` matches one of the glob ``patterns`` (all if None)."""
    layers = [ls for group in nets.values() for ls in group]
    if not patterns:
        return layers
    chosen = [ls for ls in layers
              if any(fnmatch.fnmatchcase(ls.name, p) or fnmatch.fnmatchcase(ls.id, p) for p in patterns)]
    if not chosen:
        raise InputError(f"no layer matches {', '.join(patterns)}; layers: "
                         f"{', '.join(ls.id for ls in layers)}", field="layers")
    return chosen


# ----------------------------------------------------------------------------- weights
def _values(rng, shape) -> np.ndarray:
    w = rng.standard_normal(shape).astype(np.float32)
    w[np.abs(w) < 1e-2] = 1e-2  # kept positions stay clearly non-zero
    return w


def _empty_planes(rng, mask_planes: np.ndarray, density: float, per_plane: int) -> np.ndarray:
    """Zero whole planes (rows of ``mask_planes``, each keeping ``per_plane``) to reach
    ``density`` or just below it (the weight is at least as sparse as asked: a 50 % case
    must not land at 49.99 %, where ``pack(w, "auto")`` keeps a layer dense)."""
    n_planes, k = mask_planes.shape
    keep_planes = int(math.floor(density * n_planes * k / per_plane + 1e-9))
    keep_planes = min(max(keep_planes, 1), n_planes)
    empty = rng.permutation(n_planes)[keep_planes:]
    mask_planes[empty] = False
    return mask_planes


def kep_keep(k: int, density: float) -> int:
    """Kept positions per plane for the ``kep`` structure at ``density`` (of ``k`` positions)."""
    base = max(1, int(round(KEP_KEEP_3x3 / 9 * k)))
    return min(k, max(base, math.ceil(density * k - 1e-9)))


def make_weight(structure: str, sparsity: float, shape, seed: int) -> np.ndarray:
    """A float32 weight of ``shape`` (O, C, KH, KW) with the given structure and sparsity."""
    if structure not in STRUCTURES:
        raise UnsupportedError(f"unknown structure {structure!r}; choose from {', '.join(STRUCTURES)}",
                               field="structures")
    if not 0.0 <= sparsity < 1.0:
        raise InputError(f"sparsity must be in [0, 1), got {sparsity}", field="sparsities")
    rng = np.random.default_rng(seed)
    O, C, KH, KW = shape
    k = KH * KW
    density = 1.0 - sparsity
    if structure == "random":
        n_keep = max(1, int(math.floor(density * O * C * k + 1e-9)))  # sparsity >= asked
        mask = np.zeros(O * C * k, dtype=bool)
        mask[rng.choice(O * C * k, size=n_keep, replace=False)] = True
        mask = mask.reshape(shape)
    elif structure == "kep":
        keep = kep_keep(k, density)
        n_lib = min(KEP_LIBRARY, math.comb(k, keep))
        library, seen = [], set()
        while len(library) < n_lib:
            pos = tuple(sorted(rng.choice(k, size=keep, replace=False).tolist()))
            if pos not in seen:
                seen.add(pos)
                row = np.zeros(k, dtype=bool)
                row[list(pos)] = True
                library.append(row)
        library = np.array(library)
        planes = library[rng.integers(0, n_lib, size=O * C)]
        mask = _empty_planes(rng, planes, density, keep).reshape(shape)
    else:  # filter-shared positions
        keep = min(k, max(1, math.ceil(density * k - 1e-9)))
        per_filter = np.zeros((O, k), dtype=bool)
        for o in range(O):
            per_filter[o, rng.choice(k, size=keep, replace=False)] = True
        planes = np.repeat(per_filter, C, axis=0)  # (O*C, k), o-major like the weight
        mask = _empty_planes(rng, planes, density, keep).reshape(shape)
    return np.where(mask, _values(rng, shape), np.float32(0))


@dataclass
class Case:
    """One timed situation: a layer, a weight (structure + sparsity), batch and threads."""
    layer: LayerShape
    structure: str
    sparsity: float
    batch: int
    threads: int
    seed: int = 0
    info: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return (f"{self.layer.id}|{self.structure}|{self.sparsity:g}|n{self.batch}|t{self.threads}")

    def weight_seed(self) -> int:
        # the same weight for every batch/threads of one (layer, structure, sparsity)
        h = 0
        for ch in f"{self.layer.id}|{self.structure}|{self.sparsity:.4f}":
            h = (h * 131 + ord(ch)) % (2**31)
        return (h + 7919 * self.seed) % (2**31)


def make_cases(layers, structures, sparsities, batches, threads, seed=0) -> list[Case]:
    """Cases ordered so that one layer's weight is generated once and reused (see runner)."""
    return [Case(ls, st, float(sp), int(n), int(t), seed)
            for ls in layers for st in structures for sp in sparsities
            for n in batches for t in threads]
