"""bench-model end to end on the smallest reference network: JSON, plot, matching outputs."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.slow]


def test_bench_model_smoke(tmp_path, capsys):
    from kepsparse.cli import main
    rc = main(["bench-model", "--model", "resnet56", "--sparsity", "0.9", "--batch", "1,2",
               "--repeats", "2", "--threads", "2", "--no-tune", "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "resnet56_s90_32px_t2.json").read_text())
    assert (tmp_path / "resnet56_s90_32px_t2.png").stat().st_size > 1000
    assert [r["batch"] for r in doc["results"]] == [1, 2]
    for r in doc["results"]:
        assert r["outputs_match"]
        assert r["torch_vs_ort_err"] <= 1e-3 * max(1.0, r["tolerance"] * 1e4)
        for eng in ("kepsparse", "onnxruntime", "torch"):
            assert r[eng]["median_ms"] > 0 and r[eng]["p90_ms"] >= r[eng]["median_ms"]
    assert doc["flops_nonzero"] < 0.2 * doc["flops_dense"]
    assert "kepsparse" in capsys.readouterr().out
