"""Mutation fuzzing of the untrusted-input boundary: the .kep loader and the format
validators. The only outcome besides success is the package's own exception; a file that
loads is fully valid (it converts back and runs)."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kepsparse as ks
from kepsparse.testing import make_kep_weight, random_sparse_weight

# CI runs a few hundred inputs per entry point; KEPSPARSE_FUZZ_EXAMPLES=10000 for a long run.
EXAMPLES = int(os.environ.get("KEPSPARSE_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 300,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_file(tmp_path_factory):
    rng = np.random.default_rng(3)
    m = ks.SparseModel()
    m.add(ks.SparseConv("a", ks.pack(make_kep_weight(rng, 6, 4, 3, 3), "pattern"),
                        rng.standard_normal(6).astype(np.float32), ks.ConvGeometry.make(1, 1)))
    m.add(ks.SparseConv("b", ks.pack(random_sparse_weight(rng, (5, 6, 3, 3), 0.7), "csr"),
                        None, ks.ConvGeometry.make(2, 0)))
    m.add(ks.SparseConv("c", ks.pack(random_sparse_weight(rng, (2, 5, 1, 1), 0.0), "dense"),
                        None, None))
    path = tmp_path_factory.mktemp("fuzz") / "valid.kep"
    ks.save(m, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory):
    return _valid_file(tmp_path_factory)


def _check_loaded(model):
    x = np.ones((1, 8, 6, 6), np.float32)
    for layer in model:
        layer.weight.validate()
        layer.weight.to_dense()
        C = layer.shape[1] * (layer.geometry.groups if layer.geometry else 1)
        KH, KW = layer.shape[2:]
        xi = np.ones((1, C, KH + 4, KW + 4), np.float32) if layer.shape[1] <= 64 else x
        try:
            layer(xi, stride=1) if layer.geometry is None else layer(xi)
        except ks.KepError:
            pass


def _load_bytes(tmp_path, data):
    path = tmp_path / "mutant.kep"
    path.write_bytes(data)
    try:
        model = ks.load(path)
    except ks.KepError:
        return
    _check_loaded(model)


@FUZZ
@given(data=st.data())
def test_byte_mutations(valid_bytes, tmp_path, data):
    buf = bytearray(valid_bytes)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "set", "truncate", "insert"]))
        pos = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[pos] = data.draw(st.integers(0, 255))
        elif op == "truncate":
            del buf[pos:]
        else:
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    _load_bytes(tmp_path, bytes(buf))


def _header(valid):
    n = struct.unpack("<Q", valid[:8])[0]
    return json.loads(valid[8:8 + n]), valid[8 + n:]


JSON_VALUES = st.one_of(st.integers(-2**40, 2**40), st.none(), st.booleans(), st.text(max_size=8),
                        st.lists(st.integers(-3, 2**33), max_size=5))


@FUZZ
@given(data=st.data())
def test_structured_header_mutations(valid_bytes, tmp_path, data):
    """Mutate the JSON header's fields (tensor dtypes, shapes, offsets; layer descriptions)."""
    header, payload = _header(valid_bytes)
    model_doc = json.loads(header["__metadata__"]["model"])
    tensor_names = [k for k in header if k != "__metadata__"]
    for _ in range(data.draw(st.integers(1, 4))):
        target = data.draw(st.sampled_from(["tensor", "layer", "drop"]))
        tensor_names = [k for k in header if k != "__metadata__"]
        if target == "tensor" and tensor_names:
            name = data.draw(st.sampled_from(tensor_names))
            key = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
            if key == "dtype":
                header[name]["dtype"] = data.draw(st.sampled_from(
                    ["F32", "F64", "U8", "U16", "U32", "I32", "I64", "F16", "BOOL", "XX"]))
            else:
                header[name][key] = data.draw(st.lists(st.integers(-2, 2**34), max_size=4))
        elif target == "layer":
            layer = data.draw(st.sampled_from(model_doc["layers"]))
            key = data.draw(st.sampled_from(["name", "format", "shape", "geometry", "has_bias"]))
            layer[key] = data.draw(JSON_VALUES)
        elif tensor_names:
            header.pop(data.draw(st.sampled_from(tensor_names)), None)
    header["__metadata__"]["model"] = json.dumps(model_doc)
    raw = json.dumps(header).encode()
    _load_bytes(tmp_path, struct.pack("<Q", len(raw)) + raw + payload)


ARRAYS = st.sampled_from(["indptr", "indices", "values", "patterns", "plane_ids"])


@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 300)
@given(fmt_name=st.sampled_from(["csr", "pattern", "dense"]), data=st.data())
def test_format_array_mutations(fmt_name, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    shape = tuple(data.draw(st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4),
                                      st.integers(1, 4))))
    fmt = ks.pack(random_sparse_weight(rng, shape, data.draw(st.floats(0, 1))), fmt_name)
    arrays = {k: v.copy() for k, v in fmt.arrays().items()}
    name = data.draw(st.sampled_from(sorted(arrays)))
    a = arrays[name]
    how = data.draw(st.sampled_from(["value", "shrink", "grow", "dtype"]))
    if how == "value" and a.size:
        idx = data.draw(st.integers(0, a.size - 1))
        flat = a.reshape(-1)
        if a.dtype.kind in "iu":
            info = np.iinfo(a.dtype)
            flat[idx] = data.draw(st.sampled_from([0, 1, 2, info.max, info.min, info.max // 2]))
        else:
            flat[idx] = data.draw(st.sampled_from([0.0, np.nan, np.inf, -1.0]))
    elif how == "shrink" and a.size:
        arrays[name] = a.reshape(-1)[:-1]
    elif how == "grow":
        arrays[name] = np.concatenate([a.reshape(-1), a.reshape(-1)[:1]]) if a.size else a
    elif how == "dtype":
        arrays[name] = a.astype(data.draw(st.sampled_from([np.int64, np.float64, np.uint8, np.int32])))
    decl = data.draw(st.sampled_from([shape, (shape[0] + 1, *shape[1:]), shape[:3], (0, *shape[1:])]))
    try:
        out = ks.FORMATS[fmt_name].from_arrays(decl, arrays)
    except ks.KepError:
        return
    out.to_dense()  # anything accepted must be usable
