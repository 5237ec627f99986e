"""The .kep container: round trip, validation of untrusted files, atomic writes."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

import kepsparse as ks
from kepsparse.testing import make_kep_weight, random_sparse_weight


@pytest.fixture
def model(rng):
    m = ks.SparseModel(metadata={"source": "test"})
    m.add(ks.SparseConv("conv1", ks.pack(make_kep_weight(rng, 8, 3, 3, 3), "pattern"),
                        rng.standard_normal(8).astype(np.float32), ks.ConvGeometry.make(1, 1)))
    m.add(ks.SparseConv("block.conv2", ks.pack(random_sparse_weight(rng, (6, 8, 5, 5), 0.8), "csr"),
                        None, ks.ConvGeometry.make(2, (0, 1, 2, 1), 2)))
    m.add(ks.SparseConv("head", ks.pack(random_sparse_weight(rng, (4, 6, 1, 1), 0.1), "dense"),
                        None, None))
    return m


def test_round_trip(model, tmp_path):
    path = tmp_path / "m.kep"
    ks.save(model, path)
    back = ks.load(path)
    assert list(back.layers) == list(model.layers)
    for a, b in zip(model, back):
        assert a.weight.name == b.weight.name and a.geometry == b.geometry
        assert np.array_equal(a.weight.to_dense(), b.weight.to_dense())
        assert (a.bias is None) == (b.bias is None)
        if a.bias is not None:
            assert np.array_equal(a.bias, b.bias)
    assert back.metadata["source"] == "test"
    assert not [p for p in tmp_path.iterdir() if p.name != "m.kep"]  # no temp files left


def _rewrite_header(path, edit):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def _edit_model(header, fn):
    doc = json.loads(header["__metadata__"]["model"])
    fn(doc)
    header["__metadata__"]["model"] = json.dumps(doc)


@pytest.mark.parametrize("edit,match", [
    (lambda h: h["__metadata__"].__setitem__("format", "other"), "magic"),
    (lambda h: h["__metadata__"].__setitem__("version", "99"), "version"),
    (lambda h: _edit_model(h, lambda d: d["layers"][0].__setitem__("shape", [8, 3, 3, 4])), "conv1"),
    (lambda h: _edit_model(h, lambda d: d["layers"][1].__setitem__("format", "bogus")), "unknown format"),
    (lambda h: _edit_model(h, lambda d: d["layers"][0].__setitem__("has_bias", False)), "not described"),
    (lambda h: _edit_model(h, lambda d: d["layers"][2].__setitem__("has_bias", True)), "bias"),
    (lambda h: _edit_model(h, lambda d: d["layers"].pop()), "not described"),
    (lambda h: h["__metadata__"].__setitem__("model", "{not json"), "model"),
])
def test_corrupted_header_refused(model, tmp_path, edit, match):
    path = tmp_path / "m.kep"
    ks.save(model, path)
    _rewrite_header(path, edit)
    with pytest.raises(ks.KepFileError, match=match) as err:
        ks.load(path)
    assert str(path) in str(err.value)


def test_index_out_of_range_refused(model, tmp_path):
    path = tmp_path / "m.kep"
    ks.save(model, path)
    layer = model["block.conv2"]
    layer.weight.indices[-1] = 6 * 0 + 8 * 25 + 3  # past C*KH*KW
    # bypass save()'s validation to produce a file with a bad index
    from safetensors.numpy import save_file
    from kepsparse.kepfile import MAGIC
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    meta = json.loads(data[8:8 + n])["__metadata__"]
    tensors = {}
    for i, lay in enumerate(model):
        for k, v in lay.weight.arrays().items():
            tensors[f"layers/{i}/{k}"] = v
        if lay.bias is not None:
            tensors[f"layers/{i}/bias"] = lay.bias
    assert meta["format"] == MAGIC
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ks.KepFileError, match="block.conv2.*indices.*out of range"):
        ks.load(path)


@pytest.mark.parametrize("cut", [0, 5, 8, 100, -1])
def test_truncated_refused(model, tmp_path, cut):
    path = tmp_path / "m.kep"
    ks.save(model, path)
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut >= 0 else data[:-7])
    with pytest.raises(ks.KepFileError):
        ks.load(path)


def test_garbage_and_missing(tmp_path):
    with pytest.raises(ks.KepFileError, match="no such file"):
        ks.load(tmp_path / "absent.kep")
    junk = tmp_path / "junk.kep"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(ks.KepFileError):
        ks.load(junk)
    pt = tmp_path / "fake.kep"
    pt.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ks.KepFileError):
        ks.load(pt)


def test_failed_save_keeps_previous_file(model, tmp_path, monkeypatch):
    path = tmp_path / "m.kep"
    ks.save(model, path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        ks.save(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.kep"]


def test_invalid_layer_refused_at_save_not_at_load(model, tmp_path):
    model["conv1"].bias = np.full(8, np.inf, np.float32)
    path = tmp_path / "m.kep"
    with pytest.raises(ks.FormatError, match="conv1.*bias"):
        ks.save(model, path)
    assert not path.exists()


def test_huge_declared_shape_refused_before_allocation(model, tmp_path):
    path = tmp_path / "m.kep"
    ks.save(model, path)
    _rewrite_header(path, lambda h: _edit_model(
        h, lambda d: d["layers"][1].__setitem__("shape", [6, 8, 2**20, 2**20])))
    with pytest.raises(ks.KepFileError, match="block.conv2.*shape"):
        ks.load(path)


def test_padding_bomb_refused_before_allocation(model):
    layer = model["conv1"]
    with pytest.raises(ks.InputError, match="padding"):
        layer(np.ones((1, 3, 4, 4), np.float32), padding=2**17)


def test_saved_file_mode_follows_umask_or_replaced_file(model, tmp_path):
    path = tmp_path / "m.kep"
    old = os.umask(0o022)
    try:
        ks.save(model, path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o640)
    ks.save(model, path)
    assert path.stat().st_mode & 0o777 == 0o640
