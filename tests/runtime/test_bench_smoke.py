"""bench-model end to end on the smallest reference network: JSON, plot, matching outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.slow]


@pytest.mark.parametrize("keep, tag", [(None, "resnet56_s90_32px_t2"),
                                       (4, "resnet56_s90_32px_t2_k4p8")])
def test_bench_model_smoke(tmp_path, capsys, keep, tag):
    from kepsparse import load
    from kepsparse.cli import main
    rc = main(["bench-model", "--model", "resnet56", "--sparsity", "0.9", "--batch", "1,2",
               "--repeats", "2", "--threads", "2", "--no-tune", "--out", str(tmp_path),
               *([] if keep is None else ["--keep", str(keep)])])
    assert rc == 0
    doc = json.loads((tmp_path / f"{tag}.json").read_text())
    assert (tmp_path / f"{tag}.png").stat().st_size > 1000
    assert doc["kep_masks"] == {"keep_per_pattern": keep or 2, "patterns": 8}
    # the 3x3 convs' kept planes keep exactly that many positions
    layer = next(lay for lay in load(tmp_path / f"{tag}.kep").layers.values()
                 if lay.weight.shape[2:] == (3, 3) and lay.weight.shape[1] > 3)
    per_plane = (layer.weight.to_dense() != 0).sum(axis=(2, 3))
    assert set(np.unique(per_plane)) == {0, keep or 2}
    assert [r["batch"] for r in doc["results"]] == [1, 2]
    for r in doc["results"]:
        assert r["outputs_match"]
        assert r["torch_vs_ort_err"] <= 1e-3 * max(1.0, r["tolerance"] * 1e4)
        for eng in ("kepsparse", "onnxruntime", "torch"):
            assert r[eng]["median_ms"] > 0 and r[eng]["p90_ms"] >= r[eng]["median_ms"]
    assert doc["flops_nonzero"] < 0.2 * doc["flops_dense"]
    assert "kepsparse" in capsys.readouterr().out
