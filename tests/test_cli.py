"""The kepsparse command: convert, inspect, and clean failures (exit 2, one line, no traceback,
no partial output)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def kepsparse(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kepsparse", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.fixture
def checkpoint(tmp_path):
    import torch.nn.utils.prune as prune
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 32, 3, padding=1))
    prune.l1_unstructured(net[0], "weight", amount=0.3)
    prune.l1_unstructured(net[2], "weight", amount=0.9)
    path = tmp_path / "pruned.pt"
    torch.save(net.state_dict(), path)
    return path, net


def test_convert_and_inspect_json(checkpoint, tmp_path):
    path, net = checkpoint
    out = tmp_path / "m.kep"
    r = kepsparse("convert", path, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and out.exists()
    r = kepsparse("inspect", out, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    rows = {row["name"]: row for row in doc["layers"]}
    assert set(rows) == {"0", "2"}
    for name, idx in (("0", 0), ("2", 2)):
        row = rows[name]
        assert set(row) >= {"name", "shape", "format", "nnz", "sparsity", "value_bytes", "index_bytes"}
        assert row["nnz"] == int(net[idx].weight_mask.sum())
        assert row["shape"] == list(net[idx].weight.shape)
    assert rows["0"]["format"] == "dense"  # 30 % sparse < default threshold 0.5
    assert rows["2"]["format"] in ("csr", "pattern")
    r = kepsparse("inspect", out)
    assert r.returncode == 0 and "total" in r.stdout


def test_convert_format_and_threshold(checkpoint, tmp_path):
    path, _ = checkpoint
    out = tmp_path / "m.kep"
    assert kepsparse("convert", path, "-o", out, "--format", "csr").returncode == 0
    doc = json.loads(kepsparse("inspect", out, "--json").stdout)
    assert {r["format"] for r in doc["layers"]} == {"csr"}
    assert kepsparse("convert", path, "-o", out, "--min-sparsity", "0.1").returncode == 0
    doc = json.loads(kepsparse("inspect", out, "--json").stdout)
    assert "dense" not in {r["format"] for r in doc["layers"]}


def _assert_clean_failure(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("kepsparse: error: ")
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


def test_failed_convert_leaves_no_output(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    out = tmp_path / "out.kep"
    _assert_clean_failure(kepsparse("convert", bad, "-o", out), str(bad))
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_failed_convert_keeps_existing_output(checkpoint, tmp_path):
    path, _ = checkpoint
    out = tmp_path / "m.kep"
    assert kepsparse("convert", path, "-o", out).returncode == 0
    before = out.read_bytes()
    empty = tmp_path / "empty.pt"
    torch.save({"fc.weight": torch.ones(2, 2)}, empty)
    _assert_clean_failure(kepsparse("convert", empty, "-o", out), "no convolution weights")
    assert out.read_bytes() == before


def test_clean_errors(tmp_path):
    _assert_clean_failure(kepsparse("inspect", tmp_path / "missing.kep"), "missing.kep", "no such file")
    junk = tmp_path / "junk.kep"
    junk.write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    _assert_clean_failure(kepsparse("inspect", junk), "junk.kep")
    _assert_clean_failure(kepsparse("convert", tmp_path / "missing.pt", "-o", tmp_path / "x.kep"),
                          "no such file")
