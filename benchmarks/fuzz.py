#!/usr/bin/env python
"""Mutation fuzzing of kepsparse's untrusted-input boundary, for long runs.

Entry points (``--entry``):
    kep          kepsparse.load on mutated .kep files (bytes, header JSON, graph JSON)
    checkpoint   kepsparse.convert on torch.save checkpoints: random state_dicts (plain,
                 torch.nn.utils.prune weight_orig/weight_mask, wrapped, odd dtypes, layouts,
                 views, pickled objects), zip-level and pickle-level mutations, byte mutations
    safetensors  kepsparse.convert on .safetensors: random files, header JSON mutations
                 (dtypes, shapes, offsets), byte mutations
    onnx         kepsparse.convert on .onnx: small valid models mutated at the protobuf
                 level (ops, attributes, initializer dims/data/types, external data refs,
                 constant-folding bombs, opsets) and at the byte level; a model that
                 converts is run
    formats      the sparse formats' validators (from_arrays) on mutated arrays
    all          each of the above in turn

The only outcomes allowed besides success are kepsparse's own exceptions (KepError). Every
input is run in a worker process; an exception of another type is a *failure* (its input
and traceback are saved under --crash-dir), a worker killed by a signal (segfault, abort)
or silent for --timeout seconds is a *crash* (its input is saved too; the worker restarts
after it). The worker runs under an address-space limit (--mem-limit-mb above what it
uses after start-up), so an input that makes the package allocate more than that fails
with MemoryError: a kilobyte file must not make it allocate gigabytes. Input i of a run
is generated from (entry, seed, i) alone.

    python benchmarks/fuzz.py --entry all --count 10000 --seed 1
Exit status: 0 when every input ended in success or a KepError, 1 otherwise.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import pickle
import pickletools
import queue
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
import zipfile
from pathlib import Path

import numpy as np

ENTRIES = ("kep", "checkpoint", "safetensors", "onnx", "formats")
EXT = {"kep": ".kep", "checkpoint": ".pt", "safetensors": ".safetensors", "onnx": ".onnx",
       "formats": ".npz"}

# ----------------------------------------------------------------------------- mutators

INTERESTING = [0, 1, 2, 3, 7, 8, 16, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1,
               2**32, 2**40, 2**62, 2**63 - 1, -1, -2, -(2**31), -(2**63)]


def mutate_bytes(r: random.Random, data: bytes, rounds: int | None = None) -> bytes:
    """A few random byte-level edits: bit flips, byte sets, interesting integers written
    over 1/2/4/8 bytes, insertions, deletions, duplicated spans, truncation."""
    buf = bytearray(data)
    for _ in range(rounds or r.randint(1, 8)):
        n = len(buf)
        op = r.randrange(8)
        pos = r.randrange(n) if n else 0
        if op == 0 and n:
            buf[pos] ^= 1 << r.randrange(8)
        elif op == 1 and n:
            buf[pos] = r.choice([0, 1, 0x7F, 0x80, 0xFF, r.randrange(256)])
        elif op == 2 and n:
            width = r.choice([1, 2, 4, 8])
            v = r.choice(INTERESTING) % (1 << (8 * width))
            buf[pos:pos + width] = v.to_bytes(width, r.choice(["little", "big"]))
        elif op == 3:
            buf[pos:pos] = r.randbytes(r.randint(1, 32))
        elif op == 4 and n:
            del buf[pos:pos + r.randint(1, 64)]
        elif op == 5 and n:
            span = bytes(buf[pos:pos + r.randint(1, 64)])
            at = r.randrange(n)
            buf[at:at] = span * r.randint(1, 4)
        elif op == 6 and n:
            del buf[pos:]
        else:  # random byte run
            buf[pos:pos + 8] = bytes([r.randrange(256)]) * 8
    return bytes(buf)


def rand_json(r: random.Random, depth: int = 0):
    c = r.randrange(9 if depth < 2 else 6)
    if c == 0:
        return r.choice(INTERESTING)
    if c == 1:
        return r.choice([None, True, False])
    if c == 2:
        return r.choice(["", "x", "F32", "csr", "pattern", "dense", "relu", "\u00e9\u4e2d",
                         "layers/0/values", "a" * 300])
    if c == 3:
        return r.choice([0.5, -1.5, 1e308, float("nan"), float("inf")])
    if c == 4:
        return [r.choice(INTERESTING) for _ in range(r.randint(0, 5))]
    if c == 5:
        return r.uniform(-4, 4)
    if c in (6, 7):
        return [rand_json(r, depth + 1) for _ in range(r.randint(0, 4))]
    return {r.choice(["name", "op", "x", "shape", "inputs"]): rand_json(r, depth + 1)
            for _ in range(r.randint(0, 3))}


def mutate_json(r: random.Random, doc, rounds: int | None = None):
    """Replace, delete or insert a few values anywhere in a JSON document (in place)."""
    for _ in range(rounds or r.randint(1, 4)):
        path = []  # random walk to a container
        node = doc
        for _ in range(r.randint(0, 6)):
            if isinstance(node, dict) and node:
                k = r.choice(list(node))
            elif isinstance(node, list) and node:
                k = r.randrange(len(node))
            else:
                break
            if not isinstance(node[k], (dict, list)):
                path.append((node, k))
                break
            path.append((node, k))
            node = node[k]
        if not path:
            continue
        parent, k = path[-1]
        op = r.randrange(4)
        if op == 0 or (op == 3 and not isinstance(parent[k], list)):
            parent[k] = rand_json(r)
        elif op == 1:
            if isinstance(parent, dict):
                parent.pop(k, None)
            else:
                del parent[k]
        elif op == 2 and isinstance(parent, list):
            parent.insert(k, copy.deepcopy(parent[k]))
        elif op == 2:
            parent[r.choice(["extra", k + "_", "__x"]) if isinstance(k, str) else k] = rand_json(r)
        else:
            lst = parent[k]
            if lst:
                lst[r.randrange(len(lst))] = r.choice(INTERESTING + [rand_json(r)])
    return doc


# ----------------------------------------------------------------------------- corpora


def _sparse_weight(rng: np.random.Generator, shape, sparsity: float) -> np.ndarray:
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) < sparsity] = 0
    return w


def _kep_weight(rng: np.random.Generator, O, C, K=3) -> np.ndarray:
    """A KEP-pruned weight: every plane follows one of a few patterns."""
    pats = rng.random((4, K * K)) < 0.4
    pats[:, K * K // 2] = True
    ids = rng.integers(0, 4, size=(O, C))
    w = rng.standard_normal((O, C, K * K)).astype(np.float32) * pats[ids]
    return w.reshape(O, C, K, K)


def _state_dict_numpy(r: random.Random) -> dict:
    rng = np.random.default_rng(r.getrandbits(32))
    sd = {}
    for j in range(r.randint(1, 3)):
        O, C, K = r.randint(1, 8), r.randint(1, 6), r.choice([1, 3, 5])
        w = _kep_weight(rng, O, C, K) if r.random() < 0.5 else _sparse_weight(rng, (O, C, K, K), r.random())
        sd[f"layer{j}.conv.weight"] = w
        if r.random() < 0.5:
            sd[f"layer{j}.conv.bias"] = rng.standard_normal(O).astype(np.float32)
    if r.random() < 0.3:
        sd["fc.weight"] = rng.standard_normal((3, 4)).astype(np.float32)
    return sd


class Entry:
    """One entry point: ``make(r) -> bytes`` (the input file) and ``run(path)``."""

    def __init__(self, workdir: Path):
        self.workdir = workdir

    def make(self, r: random.Random) -> bytes:
        raise NotImplementedError

    def run(self, path: Path) -> None:
        raise NotImplementedError


def _exercise_layers(model) -> None:
    """A model that loaded or converted must be usable: validate, densify, run each layer
    on a small input with every available backend (KepError allowed, e.g. a too-small input)."""
    import kepsparse as ks
    backends = [b for b, why in ks.backend_status().items() if why is None]
    for layer in model:
        layer.weight.validate()
        layer.weight.to_dense()
        O, C, KH, KW = layer.shape
        geo = layer.geometry
        groups = geo.groups if geo is not None else 1
        if C * groups > 64 or KH > 16 or KW > 16:
            continue
        dh, dw = (geo.dilation if geo is not None else (1, 1))
        x = np.ones((1, C * groups, min(dh * (KH - 1) + 3, 40), min(dw * (KW - 1) + 3, 40)),
                    np.float32)
        for b in backends:
            try:
                if geo is None:
                    layer(x, backend=b, stride=1)
                else:
                    layer(x, backend=b)
            except ks.KepError:
                pass


def _run_graph(model) -> None:
    import kepsparse as ks
    graph = getattr(model, "graph", None)
    if graph is None:
        return
    args = []
    for spec in graph.inputs:
        shape = spec.get("shape")
        if shape is None or any(d is None or d <= 0 for d in shape) or math.prod(shape) > 1 << 16:
            return
        args.append(np.ones(shape, np.dtype(spec["dtype"])))
    try:
        model(*args)
    except ks.KepError:
        pass


class KepEntry(Entry):
    """ks.load on mutated .kep files: a layers-only model and a graph model (from ONNX)."""

    def __init__(self, workdir):
        super().__init__(workdir)
        import kepsparse as ks
        rng = np.random.default_rng(3)
        m = ks.SparseModel()
        m.add(ks.SparseConv("a", ks.pack(_kep_weight(rng, 6, 4), "pattern"),
                            rng.standard_normal(6).astype(np.float32), ks.ConvGeometry.make(1, 1)))
        m.add(ks.SparseConv("b", ks.pack(_sparse_weight(rng, (5, 6, 3, 3), 0.7), "csr"),
                            None, ks.ConvGeometry.make(2, 0)))
        m.add(ks.SparseConv("c", ks.pack(_sparse_weight(rng, (2, 5, 1, 1), 0.0), "dense"),
                            None, None))
        self.corpus = [self._save(m)]
        onnx_dir = workdir / "kep-corpus"
        onnx_dir.mkdir(exist_ok=True)
        for k, proto in enumerate(onnx_corpus()):
            p = onnx_dir / f"m{k}.onnx"
            p.write_bytes(proto.SerializeToString())
            self.corpus.append(self._save(ks.convert(p)))

    def _save(self, model) -> bytes:
        import kepsparse as ks
        p = self.workdir / "corpus.kep"
        ks.save(model, p)
        return p.read_bytes()

    def make(self, r):
        data = r.choice(self.corpus)
        if r.random() < 0.4:
            return mutate_bytes(r, data)
        n = struct.unpack("<Q", data[:8])[0]
        header, payload = json.loads(data[8:8 + n]), data[8 + n:]
        if r.random() < 0.7:
            doc = json.loads(header["__metadata__"]["model"])
            mutate_json(r, doc)
            header["__metadata__"]["model"] = json.dumps(doc)
        else:
            mutate_json(r, header)
        raw = json.dumps(header).encode()
        size = len(raw) if r.random() < 0.9 else r.choice([0, len(raw) - 1, len(raw) + 8, 2**63])
        return struct.pack("<Q", size % 2**64) + raw + payload

    def run(self, path):
        import kepsparse as ks
        model = ks.load(path)
        _exercise_layers(model)
        _run_graph(model)


class _Payload:
    """A pickled object whose unpickling would create a marker file: it must never run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _random_tensor_variant(r: random.Random, t, torch):
    """``t`` in an odd dtype, layout or memory arrangement (sometimes)."""
    c = r.randrange(24)
    if c == 0:
        return t.to(r.choice([torch.float16, torch.bfloat16, torch.float64, torch.int8,
                              torch.int64, torch.bool, torch.complex64, torch.uint8,
                              torch.float8_e4m3fn, torch.float8_e5m2]))
    if c == 1 and t.dim() == 4:
        return t.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # non-contiguous
    if c == 2 and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if c == 3:  # zero strides: a huge logical tensor over one element
        big = r.choice([(4096, 4096, 3, 3), (2**20, 2**12, 1, 1), (1, 1, 3, 3)])
        return torch.ones(1).expand(*big)
    if c == 4:
        return t.to_sparse()
    if c == 5:
        return torch.quantize_per_tensor(t.float(), 0.1, 0, torch.qint8)
    if c == 6:
        return torch.empty(t.shape, device="meta")
    if c == 7:
        return torch.nn.Parameter(t.float(), requires_grad=r.random() < 0.5)
    if c == 8:
        t = t.float().clone()
        t.view(-1)[r.randrange(max(t.numel(), 1))] = r.choice([float("nan"), float("inf")]) if t.numel() else 0
        return t
    if c == 9:
        return t.reshape(-1)[: max(t.numel() - 1, 0)] if t.numel() else t
    if c == 10:
        shape = list(t.shape)
        shape[r.randrange(len(shape))] = 0 if shape else 0
        return torch.zeros(shape)
    if c == 11:
        return t.unsqueeze(0)
    if c == 12:
        return torch.nested.nested_tensor([torch.ones(2, 3), torch.ones(3, 3)])
    return t


def _random_checkpoint_obj(r: random.Random, torch, marker: str):
    g = torch.Generator().manual_seed(r.getrandbits(32))
    sd = {}
    shared = None
    for j in range(r.randint(1, 3)):
        O, C, K = r.randint(1, 8), r.randint(1, 6), r.choice([1, 3, 5])
        KW = K if r.random() < 0.9 else r.choice([1, 3])
        prefix = r.choice([f"layer{j}.conv", f"features.{j}", f"m.{j}", "", "conv",
                           f"x\u00e9\u4e2d.{j}", "a." * 5 + str(j)])
        p = (prefix + ".") if prefix else ""
        w = torch.randn(O, C, K, KW, generator=g)
        mask = (torch.rand(O, C, K, KW, generator=g) > r.random()).float()
        if r.random() < 0.5:  # torch.nn.utils.prune style
            sd[p + "weight_orig"] = _random_tensor_variant(r, w, torch) if r.random() < 0.3 else w
            m = _random_tensor_variant(r, mask, torch) if r.random() < 0.3 else mask
            if r.random() > 0.05:
                sd[p + "weight_mask"] = m
        else:
            w = w * mask
            sd[p + "weight"] = _random_tensor_variant(r, w, torch) if r.random() < 0.3 else w
        if r.random() < 0.5:
            b = torch.randn(O if r.random() < 0.9 else O + 1, generator=g)
            if r.random() < 0.3:
                sd[p + "bias_orig"] = b
                sd[p + "bias_mask"] = _random_tensor_variant(r, torch.ones_like(b), torch) \
                    if r.random() < 0.3 else torch.ones_like(b)
            else:
                sd[p + "bias"] = _random_tensor_variant(r, b, torch) if r.random() < 0.2 else b
        if shared is None:
            shared = w
        elif r.random() < 0.1:
            sd[p + "tied.weight"] = shared  # the same storage under two keys
    extra = r.randrange(8)
    if extra == 0:
        sd["fc.weight"] = torch.randn(3, 4, generator=g)
    elif extra == 1:
        sd["epoch"] = 3
    elif extra == 2:
        sd[r.choice([1, (1, 2), None])] = torch.ones(2, 2, 3, 3)
    elif extra == 3:
        sd["payload"] = _Payload(marker)  # pickled code: must be refused
    elif extra == 4:
        sd["bn.running_mean"] = torch.zeros(4)
    wrap = r.randrange(10)
    if wrap == 0:
        return {"epoch": 1, "state_dict": sd}
    if wrap == 1:
        return {"model": sd, "optimizer": {"lr": 0.1}}
    if wrap == 2:
        return list(sd.values())
    if wrap == 3:
        return next(iter(sd.values()), None)
    if wrap == 4:
        from collections import OrderedDict
        return OrderedDict(sd)
    return sd


GLOBALS = [b"torch._utils\n_rebuild_tensor_v2\n", b"torch._utils\n_rebuild_tensor\n",
           b"torch._utils\n_rebuild_sparse_tensor\n", b"torch._utils\n_rebuild_parameter\n",
           b"torch._utils\n_rebuild_meta_tensor_no_storage\n", b"torch._utils\n_rebuild_qtensor\n",
           b"torch._utils\n_rebuild_nested_tensor\n", b"torch._utils\n_rebuild_wrapper_subclass\n",
           b"collections\nOrderedDict\n", b"torch\nFloatStorage\n", b"torch\nDoubleStorage\n",
           b"torch\nHalfStorage\n", b"torch\nBFloat16Storage\n", b"torch\nByteStorage\n",
           b"torch\nBoolStorage\n", b"torch\nLongStorage\n", b"torch\nSize\n", b"torch\nfloat32\n",
           b"builtins\nset\n", b"builtins\neval\n", b"os\nsystem\n", b"posix\nsystem\n",
           b"pathlib\nPath\n", b"torch.nn.parameter\nParameter\n"]


def _encode_int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)
    if -(2**31) <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    n = (v.bit_length() + 8) // 8
    return b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)


def mutate_pickle(r: random.Random, pkl: bytes) -> bytes:
    """Edit a pickle at the opcode level: integers (sizes, strides, offsets, numels),
    GLOBAL targets, strings, and deleted / duplicated opcodes."""
    try:
        ops = [(op, arg, pos) for op, arg, pos in pickletools.genops(pkl)]
    except Exception:  # noqa: BLE001 - already mutated into garbage
        return mutate_bytes(r, pkl)
    spans = []
    for k, (op, arg, pos) in enumerate(ops):
        end = ops[k + 1][2] if k + 1 < len(ops) else len(pkl)
        spans.append((op, arg, pos, end))
    out = pkl
    for _ in range(r.randint(1, 4)):
        op, arg, pos, end = r.choice(spans)
        c = r.randrange(5)
        if c <= 1:
            ints = [s for s in spans if s[0].name in ("BININT1", "BININT2", "BININT", "LONG1")]
            if ints:
                op, arg, pos, end = r.choice(ints)
                new = _encode_int(r.choice(INTERESTING + [arg * 2 + 1, arg - 1, arg * 4096]))
                out = pkl[:pos] + new + pkl[end:]
        elif c == 2:
            gl = [s for s in spans if s[0].name == "GLOBAL"]
            if gl:
                op, arg, pos, end = r.choice(gl)
                out = pkl[:pos] + b"c" + r.choice(GLOBALS) + pkl[end:]
        elif c == 3:
            st = [s for s in spans if s[0].name in ("BINUNICODE", "SHORT_BINUNICODE")]
            if st:
                op, arg, pos, end = r.choice(st)
                s = r.choice(["", "cpu", "cuda", "meta", "0", "1", "99", "weight", "storage",
                              "x" * 200]).encode()
                out = pkl[:pos] + b"X" + struct.pack("<I", len(s)) + s + pkl[end:]
        else:
            if r.random() < 0.5:
                out = pkl[:pos] + pkl[end:]
            else:
                out = pkl[:end] + pkl[pos:end] + pkl[end:]
        pkl = out
        try:
            spans = []
            ops = list(pickletools.genops(pkl))
            for k, (op, arg, pos) in enumerate(ops):
                spans.append((op, arg, pos, ops[k + 1][2] if k + 1 < len(ops) else len(pkl)))
        except Exception:  # noqa: BLE001
            break
    return out


def _patch_zip_sizes(r: random.Random, buf: bytes) -> bytes:
    """Overwrite the declared (un)compressed size of a random zip entry in its local and/or
    central header."""
    b = bytearray(buf)
    heads = [(i, 18) for i in _find_all(b, b"PK\x03\x04")] + [(i, 20) for i in _find_all(b, b"PK\x01\x02")]
    if not heads:
        return buf
    i, off = r.choice(heads)
    field = off + r.choice([0, 4])  # compressed / uncompressed size
    if i + field + 4 <= len(b):
        struct.pack_into("<I", b, i + field, r.choice(INTERESTING) % 2**32)
    return bytes(b)


def _find_all(b, sub):
    out, i = [], b.find(sub)
    while i >= 0 and len(out) < 64:
        out.append(i)
        i = b.find(sub, i + 1)
    return out


class CheckpointEntry(Entry):
    """ks.convert on torch checkpoints (torch.save zip)."""

    def __init__(self, workdir):
        super().__init__(workdir)
        import torch
        self.torch = torch
        self.marker = str(workdir / "PICKLED_CODE_RAN")

    def _save(self, obj) -> bytes:
        buf = io.BytesIO()
        self.torch.save(obj, buf)
        return buf.getvalue()

    def make(self, r):
        raw = self._save(_random_checkpoint_obj(r, self.torch, self.marker))
        c = r.random()
        if c < 0.35:
            return raw  # structure-level only
        if c < 0.5:
            return mutate_bytes(r, raw)
        entries = []
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            for info in z.infolist():
                entries.append([info.filename, z.read(info.filename)])
        for _ in range(r.randint(1, 3)):
            k = r.randrange(len(entries))
            name, data = entries[k]
            c = r.randrange(8)
            if c <= 2 or name.endswith("data.pkl") and c <= 4:
                pk = next(e for e in entries if e[0].endswith("data.pkl"))
                pk[1] = mutate_pickle(r, pk[1])
            elif c == 3:
                entries[k][1] = mutate_bytes(r, data)
            elif c == 4:
                del entries[k]
            elif c == 5:
                entries.append([name if r.random() < 0.5 else name.rsplit("/", 1)[0] + "/99",
                                r.randbytes(r.randint(0, 64))])
            elif c == 6:
                entries[k][1] = data[: r.randrange(len(data) + 1)]
            else:
                entries[k][1] = r.choice([b"big", b"little", b"", b"3", b"\xff" * 4])
        out = io.BytesIO()
        deflate = r.random() < 0.2
        with zipfile.ZipFile(out, "w") as z:
            for name, data in entries:
                z.writestr(zipfile.ZipInfo(name), data,
                           compress_type=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
        buf = out.getvalue()
        if r.random() < 0.2:
            buf = _patch_zip_sizes(r, buf)
        return buf

    def run(self, path):
        import kepsparse as ks
        try:
            model = ks.convert(path)
        finally:
            if os.path.exists(self.marker):
                os.unlink(self.marker)
                raise AssertionError("a pickled object's code ran during convert")
        _exercise_layers(model)


ST_DTYPES = ["F32", "F64", "F16", "BF16", "I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64",
             "BOOL", "F8_E4M3", "F8_E5M2", "C64", "F4", "E8M0", "XX", "f32", ""]


class SafetensorsEntry(Entry):
    """ks.convert on .safetensors files."""

    def make(self, r):
        from safetensors.numpy import save
        sd = _state_dict_numpy(r)
        if r.random() < 0.2:  # prune-style, numpy side
            k = next(iter(sd))
            if k.endswith(".weight"):
                w = sd.pop(k)
                sd[k + "_orig"] = w
                sd[k[:-len("weight")] + "weight_mask"] = (w != 0).astype(
                    r.choice([np.float32, np.uint8, np.bool_, np.int64]))
        raw = save(sd, metadata=r.choice([None, {"format": "pt"}]))
        c = r.random()
        if c < 0.15:
            return raw
        if c < 0.4:
            return mutate_bytes(r, raw)
        n = struct.unpack("<Q", raw[:8])[0]
        header, payload = json.loads(raw[8:8 + n]), raw[8 + n:]
        names = [k for k in header if k != "__metadata__"]
        for _ in range(r.randint(1, 3)):
            try:
                self._edit_header(r, header, r.choice(names))
            except (TypeError, KeyError, ValueError, IndexError):  # an earlier edit broke it
                pass
        hraw = json.dumps(header).encode()
        if r.random() < 0.2:
            hraw += b" " * r.randint(0, 16)
        size = len(hraw) if r.random() < 0.9 else r.choice(INTERESTING) % 2**64
        return struct.pack("<Q", size) + hraw + payload

    def _edit_header(self, r, header, name):
        if True:
            c = r.randrange(7)
            if c == 0:
                header[name]["dtype"] = r.choice(ST_DTYPES)
            elif c == 1:
                shape = list(header[name]["shape"])
                if shape and r.random() < 0.7:
                    shape[r.randrange(len(shape))] = r.choice(INTERESTING + [0])
                else:
                    shape = [r.choice(INTERESTING) for _ in range(r.randint(0, 6))]
                header[name]["shape"] = shape
            elif c == 2:
                a, b = header[name]["data_offsets"]
                header[name]["data_offsets"] = r.choice([[a, b + 4], [0, b], [a, a], [b, a],
                                                         [a, r.choice(INTERESTING)],
                                                         [r.choice(INTERESTING), b]])
            elif c == 3:  # a second name over the same bytes, declaring a huge tensor
                header[name + "_x.weight"] = {"dtype": "F32",
                                              "shape": [r.choice(INTERESTING) for _ in range(4)],
                                              "data_offsets": header[name]["data_offsets"]}
            elif c == 4:
                header["__metadata__"] = rand_json(r)
            else:
                mutate_json(r, header, 1)

    def run(self, path):
        import kepsparse as ks
        _exercise_layers(ks.convert(path))


# ---- ONNX


def onnx_corpus():
    """Small valid models covering the converter's paths (Conv+BN+Relu, pools, Gemm,
    Clip, Add skip, Reshape, MatMul, constant folding, Pad/Slice/Concat, old opsets)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(7)

    def init(name, a):
        return numpy_helper.from_array(np.asarray(a), name)

    def model(nodes, inits, x_shape, opset=17):
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        return m

    w1, w2 = _kep_weight(rng, 8, 3), _sparse_weight(rng, (4, 8, 3, 3), 0.7)
    m1 = model([
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "bb", "mu", "var"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["z"], name="fc", transB=1),
        helper.make_node("Softmax", ["z"], ["y"], name="sm", axis=1)],
        [init("w1", w1), init("b1", rng.standard_normal(8).astype(np.float32)),
         init("s", np.ones(8, np.float32)), init("bb", np.zeros(8, np.float32)),
         init("mu", np.zeros(8, np.float32)), init("var", np.ones(8, np.float32)),
         init("w2", w2), init("fw", rng.standard_normal((5, 4)).astype(np.float32)),
         init("fb", np.zeros(5, np.float32))], [1, 3, 8, 8])
    w3, w4 = _kep_weight(rng, 4, 2), _sparse_weight(rng, (4, 2, 1, 1), 0.5)
    m2 = model([
        helper.make_node("Conv", ["x", "w3"], ["a"], name="c3", pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["a", "lo", "hi"], ["ac"], name="clip"),
        helper.make_node("Conv", ["x", "w4"], ["s"], name="c4"),
        helper.make_node("Add", ["ac", "s"], ["sum"], name="add"),
        helper.make_node("AveragePool", ["sum"], ["ap"], name="ap", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["ap", "shape"], ["rs"], name="rs"),
        helper.make_node("MatMul", ["rs", "mw"], ["y"], name="mm")],
        [init("w3", w3), init("w4", w4), init("lo", np.float32(0)), init("hi", np.float32(6)),
         init("shape", np.array([1, -1], np.int64)),
         init("mw", rng.standard_normal((36, 3)).astype(np.float32))], [1, 2, 6, 6], opset=13)
    w5 = _sparse_weight(rng, (3, 1, 3, 3), 0.6)
    m3 = model([
        helper.make_node("Constant", [], ["cshape"], name="k",
                         value=numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64))),
        helper.make_node("ConstantOfShape", ["cshape"], ["half"], name="cos",
                         value=numpy_helper.from_array(np.array([0.5], np.float32))),
        helper.make_node("Conv", ["x", "w5"], ["c"], name="c5", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "half"], ["m"], name="mul"),
        helper.make_node("Pad", ["m", "pads"], ["pd"], name="pad", mode="constant"),
        helper.make_node("Slice", ["pd", "st", "en", "ax"], ["sl"], name="slice"),
        helper.make_node("Concat", ["sl", "sl"], ["y"], name="cat", axis=1)],
        [init("w5", w5), init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
         init("st", np.array([1, 1], np.int64)), init("en", np.array([6, 6], np.int64)),
         init("ax", np.array([2, 3], np.int64))], [1, 1, 5, 5], opset=13)
    w6 = _kep_weight(rng, 2, 1)
    m4 = model([  # opset 9: attribute forms of Clip and Pad
        helper.make_node("Conv", ["x", "w6"], ["c"], name="c6", pads=[1, 1, 1, 1], group=1),
        helper.make_node("Clip", ["c"], ["cl"], name="clip6", min=0.0, max=4.0),
        helper.make_node("Pad", ["cl"], ["y"], name="pad6", pads=[0, 0, 1, 1, 0, 0, 1, 1])],
        [init("w6", w6)], [1, 1, 4, 4], opset=9)
    return [m1, m2, m3, m4]


ONNX_OPS = ["Conv", "BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "MaxPool",
            "AveragePool", "GlobalAveragePool", "Add", "Mul", "Concat", "Flatten", "Reshape",
            "Gemm", "MatMul", "Softmax", "Identity", "Pad", "Slice", "Constant",
            "ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Shape", "Gather",
            "Transpose", "Unsqueeze", "Loop", "If", "Conv", "SparseConv", "Nonexistent", ""]
EXT_LOCATIONS = ["ext.bin", "./ext.bin", "../ext.bin", "/etc/hostname", "sub/../ext.bin",
                 "sub/../../ext.bin", "link_out", "nonexistent.bin", "", "ext.bin\x00x", "."]


class OnnxEntry(Entry):
    """ks.convert on .onnx files; a model that converts is also run."""

    def __init__(self, workdir):
        super().__init__(workdir)
        import kepsparse as ks
        self.corpus = [m.SerializeToString() for m in onnx_corpus()]
        for k, raw in enumerate(self.corpus):  # the seeds themselves convert and run
            p = workdir / f"seed{k}.onnx"
            p.write_bytes(raw)
            self.run(p)
        (workdir / "ext.bin").write_bytes(np.arange(1024, dtype=np.float32).tobytes())
        (workdir / "sub").mkdir(exist_ok=True)
        link = workdir / "link_out"
        if not link.is_symlink():
            link.symlink_to("/etc/hostname")

    def _tensor(self, r, t):
        from onnx import TensorProto
        c = r.randrange(8)
        if c == 0 and t.dims:
            t.dims[r.randrange(len(t.dims))] = r.choice(INTERESTING + [0])
        elif c == 1:
            if r.random() < 0.5:
                t.dims.append(r.choice([1, 2, 2**20]))
            elif t.dims:
                del t.dims[-1]
        elif c == 2 and t.HasField("raw_data"):
            t.raw_data = t.raw_data[: r.randrange(len(t.raw_data) + 1)] if r.random() < 0.6 \
                else t.raw_data + r.randbytes(r.randint(1, 16))
        elif c == 3:
            t.data_type = r.randrange(0, 26)
        elif c == 4 and t.HasField("raw_data"):
            vals = np.frombuffer(t.raw_data[: len(t.raw_data) // 4 * 4], np.float32)
            t.ClearField("raw_data")
            t.float_data.extend(vals[: r.randint(0, vals.size)].tolist())
        elif c == 5:  # external data
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", r.choice(EXT_LOCATIONS)),
                         ("offset", str(r.choice([0, 0, 4, 4096, -4, 2**40]))),
                         ("length", str(r.choice([4 * int(np.prod(t.dims or [1])), 0, 4, 2**40])))):
                if r.random() < 0.9:
                    e = t.external_data.add()
                    e.key, e.value = k, v
        elif c == 6:
            t.name = r.choice(["", "x", "y", t.name + "_"])
        else:
            raw = t.SerializeToString()
            try:
                t.ParseFromString(mutate_bytes(r, raw, 2))
            except Exception:  # noqa: BLE001 - unparseable: leave it
                pass

    def _attr(self, r, node):
        from onnx import helper, numpy_helper
        if node.attribute and r.random() < 0.6:
            a = r.choice(node.attribute)
            c = r.randrange(5)
            if c == 0 and a.ints:
                a.ints[r.randrange(len(a.ints))] = r.choice(INTERESTING)
            elif c == 1:
                a.i = r.choice(INTERESTING)
            elif c == 2:
                a.f = r.choice([0.0, -1.0, float("nan"), float("inf"), 1e30])
            elif c == 3:
                a.type = r.randrange(0, 15)
            else:
                node.attribute.remove(a)
            return
        name = r.choice(["pads", "strides", "dilations", "kernel_shape", "group", "axis",
                         "auto_pad", "epsilon", "mode", "value", "min", "max", "ceil_mode",
                         "transB", "allowzero", "count_include_pad", "shape", "unknown"])
        kind = r.randrange(5)
        if kind == 0:
            v = [r.choice(INTERESTING) for _ in range(r.randint(0, 6))]
        elif kind == 1:
            v = r.choice(INTERESTING)
        elif kind == 2:
            v = r.choice([0.5, float("nan"), -3.0])
        elif kind == 3:
            v = r.choice(["SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET", "reflect", "edge", "bogus"])
        else:
            v = numpy_helper.from_array(np.zeros([r.choice([0, 1, 3])] * r.randint(0, 2), np.float32))
        try:
            node.attribute.append(helper.make_attribute(name, v))
        except Exception:  # noqa: BLE001
            pass

    def _bomb(self, r, g):
        """A node whose inputs are all constants: the converter folds it; its output size
        must be checked before it is computed."""
        from onnx import helper, numpy_helper
        big = r.choice([2**16, 2**20, 2**31, 2**40, 3])
        k = len(g.node)
        c = r.randrange(6)
        name = f"bomb{k}"
        if c == 0:
            g.initializer.append(numpy_helper.from_array(np.array([big, big], np.int64), name + "_s"))
            node = helper.make_node("ConstantOfShape", [name + "_s"], [name], name=name)
        elif c == 1:
            g.initializer.append(numpy_helper.from_array(np.ones((1, 1), np.float32), name + "_a"))
            g.initializer.append(numpy_helper.from_array(np.array([big, big], np.int64), name + "_s"))
            node = helper.make_node("Expand", [name + "_a", name + "_s"], [name], name=name)
        elif c == 2:
            g.initializer.append(numpy_helper.from_array(np.ones((2, 2), np.float32), name + "_a"))
            g.initializer.append(numpy_helper.from_array(np.array([big, big], np.int64), name + "_s"))
            node = helper.make_node("Tile", [name + "_a", name + "_s"], [name], name=name)
        elif c == 3:
            for n, v in (("_0", 0.0), ("_1", float(big)), ("_d", r.choice([1.0, 1e-9, -1.0]))):
                g.initializer.append(numpy_helper.from_array(np.array(v, np.float32), name + n))
            node = helper.make_node("Range", [name + "_0", name + "_1", name + "_d"], [name], name=name)
        elif c == 4:
            g.initializer.append(numpy_helper.from_array(np.ones((1, 1, 4, 4), np.float32), name + "_a"))
            g.initializer.append(numpy_helper.from_array(np.array([1, 1, big, big], np.float32), name + "_sc"))
            node = helper.make_node("Resize", [name + "_a", "", name + "_sc"], [name], name=name)
        else:
            g.initializer.append(numpy_helper.from_array(np.ones((1, 1, 2, 2), np.float32), name + "_a"))
            g.initializer.append(numpy_helper.from_array(np.array([0, 0, big, big, 0, 0, big, big], np.int64), name + "_p"))
            node = helper.make_node("Pad", [name + "_a", name + "_p"], [name], name=name)
        g.node.insert(r.randrange(len(g.node) + 1), node)
        if r.random() < 0.5 and g.node:  # make something use it
            victim = r.choice(g.node)
            if victim.input:
                victim.input[r.randrange(len(victim.input))] = name

    def make(self, r):
        import onnx
        raw = r.choice(self.corpus)
        if r.random() < 0.25:
            return mutate_bytes(r, raw)
        m = onnx.ModelProto()
        m.ParseFromString(raw)
        g = m.graph
        for _ in range(r.randint(1, 3)):
            c = r.randrange(12)
            if c <= 2 and g.initializer:
                self._tensor(r, r.choice(g.initializer))
            elif c == 3 and g.node:
                r.choice(g.node).op_type = r.choice(ONNX_OPS)
            elif c == 4 and g.node:
                self._attr(r, r.choice(g.node))
            elif c == 5 and g.node:
                node = r.choice(g.node)
                names = [t for n in g.node for t in n.output] + [i.name for i in g.initializer] + ["", "x", "nope"]
                if node.input and r.random() < 0.7:
                    node.input[r.randrange(len(node.input))] = r.choice(names)
                elif r.random() < 0.5:
                    node.input.append(r.choice(names))
                elif node.output:
                    node.output[r.randrange(len(node.output))] = r.choice(names)
            elif c == 6 and g.node:
                k = r.randrange(len(g.node))
                if r.random() < 0.5:
                    del g.node[k]
                else:
                    g.node.insert(r.randrange(len(g.node)), copy.deepcopy(g.node[k]))
            elif c == 7:
                self._bomb(r, g)
            elif c == 8:
                m.opset_import[0].version = r.choice([1, 6, 7, 9, 10, 11, 12, 13, 17, 19, 21, 23, 99])
                if r.random() < 0.3:
                    m.ir_version = r.choice([0, 3, 4, 7, 8, 10, 99])
                if r.random() < 0.2:
                    m.opset_import.add(domain="com.microsoft", version=1)
                    if g.node:
                        r.choice(g.node).domain = "com.microsoft"
            elif c == 9:
                vi = r.choice(list(g.input) + list(g.output))
                tt = vi.type.tensor_type
                if r.random() < 0.5:
                    tt.elem_type = r.randrange(0, 26)
                elif tt.HasField("shape") and tt.shape.dim:
                    d = r.choice(tt.shape.dim)
                    if r.random() < 0.5:
                        d.dim_value = r.choice(INTERESTING)
                    else:
                        d.dim_param = "N"
                else:
                    g.output.add().name = r.choice(["c1", "a", "nope", "x"])
            elif c == 10 and g.node:  # a Constant node with a mutated tensor
                from onnx import helper, numpy_helper
                t = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "ct")
                self._tensor(r, t)
                g.node.insert(0, helper.make_node("Constant", [], ["kc"], name="kc", value=t))
                victim = r.choice(g.node)
                if victim.input:
                    victim.input[r.randrange(len(victim.input))] = "kc"
            else:
                for n in g.node:
                    if r.random() < 0.3:
                        n.name = r.choice(["", "same", n.name])
        try:
            data = m.SerializeToString()
        except Exception:  # noqa: BLE001 - e.g. an invalid UTF-8 string after byte edits
            data = raw
        return mutate_bytes(r, data, 1) if r.random() < 0.1 else data

    def run(self, path):
        import kepsparse as ks
        model = ks.convert(path)
        _exercise_layers(model)
        _run_graph(model)


class FormatsEntry(Entry):
    """FORMATS[name].from_arrays(declared shape, arrays) on mutated arrays."""

    def make(self, r):
        import kepsparse as ks
        rng = np.random.default_rng(r.getrandbits(32))
        name = r.choice(["csr", "pattern", "dense"])
        shape = (r.randint(1, 6), r.randint(1, 6), r.choice([1, 2, 3, 5]), r.choice([1, 3, 4]))
        w = _kep_weight(rng, shape[0], shape[1], 3) if r.random() < 0.3 else _sparse_weight(rng, shape, r.random())
        shape = w.shape
        arrays = {k: v.copy() for k, v in ks.pack(w, name).arrays().items()}
        for _ in range(r.randint(1, 3)):
            if not arrays:
                break
            k = r.choice(sorted(arrays))
            a = arrays[k]
            c = r.randrange(8)
            if c <= 1 and a.size:
                flat = a.reshape(-1)
                idx = r.randrange(a.size)
                if a.dtype.kind in "iu":
                    info = np.iinfo(a.dtype)
                    flat[idx] = r.choice([0, 1, 2, info.max, info.min, info.max // 2, int(flat[idx]) + 1 if flat[idx] < info.max else 0])
                elif a.dtype.kind == "b":
                    flat[idx] = not flat[idx]
                else:
                    flat[idx] = r.choice([0.0, np.nan, np.inf, -1.0, 1e38])
            elif c == 2 and a.size:
                arrays[k] = a.reshape(-1)[:-1]
            elif c == 3:
                arrays[k] = np.concatenate([a.reshape(-1), a.reshape(-1)[:1]]) if a.size else a
            elif c == 4:
                arrays[k] = a.astype(r.choice([np.int64, np.float64, np.uint8, np.int32, np.uint16,
                                               np.float32, np.bool_, np.int8]))
            elif c == 5:
                arrays[k] = a.reshape(1, -1) if r.random() < 0.5 else a.reshape(-1)
            elif c == 6:
                arrays[k] = rng.integers(-3, 300, size=r.randint(0, 40)).astype(a.dtype)
            else:
                if r.random() < 0.5:
                    arrays.pop(k)
                else:
                    arrays[k + "_extra"] = a
        decl = r.choice([shape, shape, (shape[0] + 1, *shape[1:]), shape[:3], (0, *shape[1:]),
                         (shape[0], shape[1], shape[2] + 1, shape[3]), (2**31, 1, 1, 1),
                         (-1, *shape[1:]), "abc", (1.5, 1, 1, 1)])
        buf = io.BytesIO()
        np.savez(buf, __name__=np.array(name), __shape__=np.array(json.dumps(decl)), **arrays)
        return buf.getvalue()

    def run(self, path):
        import kepsparse as ks
        with np.load(path, allow_pickle=False) as z:
            name = str(z["__name__"])
            decl = json.loads(str(z["__shape__"]))
            arrays = {k: z[k] for k in z.files if k not in ("__name__", "__shape__")}
        fmt = ks.FORMATS[name].from_arrays(decl, arrays)
        m = ks.SparseModel()
        m.add(ks.SparseConv("f", fmt, None, ks.ConvGeometry.make(1, 1)))
        _exercise_layers(m)


ENTRY_CLASSES = {"kep": KepEntry, "checkpoint": CheckpointEntry, "safetensors": SafetensorsEntry,
                 "onnx": OnnxEntry, "formats": FormatsEntry}


# ----------------------------------------------------------------------------- worker


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _site(tb) -> str:
    """The innermost traceback frame inside kepsparse (else the innermost one)."""
    frames = traceback.extract_tb(tb)
    ours = [f for f in frames if "/kepsparse/" in f.filename.replace(os.sep, "/")]
    f = (ours or frames)[-1]
    return f"{Path(f.filename).name}:{f.lineno} ({f.name})"


def worker(args) -> int:
    warnings.simplefilter("ignore")
    import kepsparse as ks
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    entry = ENTRY_CLASSES[args.entry](workdir)
    inp = workdir / f"input{EXT[args.entry]}"
    if args.mem_limit_mb > 0:  # an input must not make the package allocate more than this
        limit = _vm_size() + args.mem_limit_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    crash_dir = Path(args.crash_dir)
    out = sys.stdout
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(args.start, args.stop):
        r = random.Random(f"{args.entry}:{args.seed}:{i}")
        inp.write_bytes(entry.make(r))
        t0 = time.perf_counter()
        try:
            entry.run(inp)
            res = {"i": i, "r": "ok"}
        except ks.KepError as exc:
            res = {"i": i, "r": "kep", "e": type(exc).__name__}
        except BaseException as exc:  # noqa: BLE001 - anything else is a finding
            if isinstance(exc, KeyboardInterrupt):
                raise
            site = _site(exc.__traceback__)
            res = {"i": i, "r": "fail", "e": type(exc).__name__, "site": site,
                   "msg": str(exc).splitlines()[0][:200] if str(exc) else ""}
            crash_dir.mkdir(parents=True, exist_ok=True)
            stem = crash_dir / f"{args.entry}-seed{args.seed}-{i}"
            shutil.copyfile(inp, stem.with_suffix(EXT[args.entry]))
            stem.with_suffix(".txt").write_text("".join(traceback.format_exception(exc)))
        res["t"] = round(time.perf_counter() - t0, 4)
        now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if now > peak:  # this input raised the worker's peak resident memory
            res["rss_mb"] = now // 1024
            res["rss_up_mb"] = (now - peak) // 1024
            res["size"] = inp.stat().st_size
            peak = now
        out.write(json.dumps(res) + "\n")
        out.flush()
    out.write(json.dumps({"done": True, "maxrss_mb": resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss // 1024}) + "\n")
    out.flush()
    return 0


# ----------------------------------------------------------------------------- driver


def _reader(stream, q):
    for line in iter(stream.readline, b""):
        q.put(line)
    q.put(None)


def fuzz_entry(entry: str, args, progress=None, task=None) -> dict:
    stats = {"entry": entry, "inputs": 0, "ok": 0, "kep_error": 0, "failures": 0, "crashes": 0,
             "sites": {}, "seconds": 0.0, "maxrss_mb": 0}
    workdir = Path(tempfile.mkdtemp(prefix=f"kepsparse-fuzz-{entry}-"))
    crash_dir = Path(args.crash_dir)
    start, t0 = 0, time.perf_counter()
    log = open(workdir / "worker-stderr.log", "ab")
    try:
        while start < args.count:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--entry", entry,
                   "--seed", str(args.seed), "--start", str(start), "--stop", str(args.count),
                   "--workdir", str(workdir), "--crash-dir", str(crash_dir),
                   "--mem-limit-mb", str(args.mem_limit_mb)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log)
            q: queue.Queue = queue.Queue()
            threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True).start()
            next_i, hung, done = start, False, False
            startup = True
            while True:
                try:  # the first input also waits for imports and corpus building
                    line = q.get(timeout=args.timeout + (120 if startup else 0))
                except queue.Empty:
                    hung = True
                    proc.kill()
                    break
                if line is None:
                    break
                startup = False
                res = json.loads(line)
                if res.get("done"):
                    stats["maxrss_mb"] = max(stats["maxrss_mb"], res["maxrss_mb"])
                    done = True
                    continue
                next_i = res["i"] + 1
                stats["inputs"] += 1
                if res.get("rss_up_mb", 0) >= args.report_rss_mb:  # the inputs that grew memory most
                    stats.setdefault("memory", []).append(
                        {"input": res["i"], "file_bytes": res["size"], "peak_mb": res["rss_mb"],
                         "grew_mb": res["rss_up_mb"]})
                kind = {"ok": "ok", "kep": "kep_error", "fail": "failures"}[res["r"]]
                stats[kind] += 1
                if res["r"] == "fail":
                    key = f"{res['e']} at {res['site']}"
                    s = stats["sites"].setdefault(key, {"count": 0, "first": res["i"], "msg": res["msg"]})
                    s["count"] += 1
                if progress is not None:
                    progress.update(task, advance=1, description=_desc(entry, stats))
            rc = proc.wait()
            if done and rc == 0:
                break
            # the worker died on input next_i (or hung): a crash; keep its input, go on after it
            stats["inputs"] += 1
            stats["crashes"] += 1
            what = "hang" if hung else f"exit status {rc}"
            key = f"crash ({what})"
            log.flush()
            tail = (workdir / "worker-stderr.log").read_bytes()[-400:].decode("utf-8", "replace")
            tail = " | ".join(ln.strip() for ln in tail.splitlines()[-3:])
            s = stats["sites"].setdefault(key, {"count": 0, "first": next_i, "msg": tail})
            s["count"] += 1
            crash_dir.mkdir(parents=True, exist_ok=True)
            inp = workdir / f"input{EXT[entry]}"
            if inp.exists():
                shutil.copyfile(inp, crash_dir / f"{entry}-seed{args.seed}-{next_i}-crash{EXT[entry]}")
            if progress is not None:
                progress.update(task, advance=1, description=_desc(entry, stats))
            start = next_i + 1
    finally:
        log.close()
        stats["seconds"] = round(time.perf_counter() - t0, 1)
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return stats


def _desc(entry, s):
    return (f"{entry:<11} ok {s['ok']:>6}  KepError {s['kep_error']:>6}  "
            f"fail {s['failures']:>3}  crash {s['crashes']:>3}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entry", choices=(*ENTRIES, "all"), default="all")
    ap.add_argument("--count", type=int, default=1000, help="inputs per entry point")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds one input may take before the worker counts as hung")
    ap.add_argument("--mem-limit-mb", type=int, default=1024,
                    help="address space a worker may add after start-up (0: no limit)")
    ap.add_argument("--crash-dir", default="fuzz-findings",
                    help="where failing and crashing inputs are saved")
    ap.add_argument("--report-rss-mb", type=int, default=256,
                    help="list the inputs that raised a worker's peak RSS by this much")
    ap.add_argument("--json", help="write the per-entry figures to this file")
    ap.add_argument("--keep-workdir", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--stop", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = Console(stderr=True)
    entries = ENTRIES if args.entry == "all" else (args.entry,)
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        for entry in entries:
            task = progress.add_task(_desc(entry, {"ok": 0, "kep_error": 0, "failures": 0,
                                                   "crashes": 0}), total=args.count)
            results.append(fuzz_entry(entry, args, progress, task))
    table = Table(title=f"kepsparse fuzz: seed {args.seed}, {args.count} inputs per entry point")
    for col in ("entry", "inputs", "ok", "KepError", "other exception", "crash/hang",
                "s", "inputs/s", "worker max RSS MB"):
        table.add_column(col, justify="left" if col == "entry" else "right")
    for s in results:
        table.add_row(s["entry"], str(s["inputs"]), str(s["ok"]), str(s["kep_error"]),
                      str(s["failures"]), str(s["crashes"]), f"{s['seconds']:.0f}",
                      f"{s['inputs'] / max(s['seconds'], 1e-9):.0f}", str(s["maxrss_mb"]))
    Console().print(table)
    bad = False
    for s in results:
        for key, v in s["sites"].items():
            bad = True
            print(f"FINDING {s['entry']}: {key}: {v['count']}x, first input {v['first']}: {v['msg']}")
    for s in results:
        for m in s.get("memory", []):
            print(f"memory {s['entry']}: input {m['input']} ({m['file_bytes']:,} bytes) raised the "
                  f"worker's peak RSS by {m['grew_mb']} MB to {m['peak_mb']} MB")
    if bad:
        print(f"inputs and tracebacks saved in {args.crash_dir}/")
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": args.seed, "count": args.count,
                                               "results": results}, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
