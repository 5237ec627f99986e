"""Smoke tests of the benchmark suite: shape data, weight structures, the runner on a tiny
case with the reference kernel and every competitor, refusal of a wrong kernel, outputs
(JSON, markdown, plot) and the ``kepsparse bench`` command."""
from __future__ import annotations

import json

import numpy as np
import pytest

from kepsparse import cli
from kepsparse.bench import cases, report
from kepsparse.bench.runner import BenchConfig, run_bench
from kepsparse.errors import InputError, UnsupportedError
from kepsparse.kernels import registry

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")

TINY = {"network": "tiny", "layers": [
    {"name": "c1", "in_channels": 5, "out_channels": 7, "in_size": [9, 8], "kernel": [3, 3],
     "stride": 1, "padding": 1},
    {"name": "c2", "in_channels": 4, "out_channels": 6, "in_size": [10, 10], "kernel": [3, 3],
     "stride": 2, "padding": 1}]}
FAST = dict(budget_s=0.005, warmup_s=0.0, min_repeats=2)


@pytest.fixture
def tiny_shapes(tmp_path):
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps(TINY))
    return str(p)


def test_builtin_shapes():
    nets = cases.load_networks()
    assert {"resnet18", "resnet50", "vgg16_cifar", "resnet56_cifar"} <= set(nets)
    r18 = nets["resnet18"]
    assert sum(ls.count for ls in r18) == 16  # ResNet-18 has 16 3x3 convolutions
    assert [ls.out_size for ls in r18] == [(56, 56), (28, 28), (28, 28), (14, 14), (14, 14),
                                           (7, 7), (7, 7)]
    assert sum(ls.count for ls in nets["resnet50"]) == 16
    assert sum(ls.count for ls in nets["vgg16_cifar"]) == 13
    assert sum(ls.count for ls in nets["resnet56_cifar"]) == 55
    with pytest.raises(UnsupportedError, match="networks"):
        cases.load_networks(["nope"])


def test_bad_shape_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"network": "x", "layers": [{"name": "a", "in_channels": 0}]}))
    with pytest.raises(InputError, match="bad.json.*in_channels"):
        cases.load_shape_file(p)


@pytest.mark.parametrize("structure", cases.STRUCTURES)
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.95])
def test_weight_structures(structure, sparsity):
    w = cases.make_weight(structure, sparsity, (32, 24, 3, 3), seed=3)
    m = w != 0
    assert abs((1 - m.mean()) - sparsity) < 0.01
    planes = m.reshape(32, 24, 9)
    if structure == "kep":
        nonempty = planes.reshape(-1, 9)[planes.reshape(-1, 9).any(1)]
        assert len(np.unique(nonempty, axis=0)) <= cases.KEP_LIBRARY
        if sparsity > 5 / 9:
            assert set(nonempty.sum(1)) == {4}
    if structure == "filter":
        for o in range(32):
            kept = planes[o][planes[o].any(1)]
            assert len(np.unique(kept, axis=0)) <= 1


def _wrong_kernel():
    ref = registry.get("any_f32_ref")

    def run(prepared, x, bias, geometry, relu=False, threads=None):
        y = ref.run(prepared, x, bias, geometry, relu, threads)
        y[:, 0, 0, 0] += 1.0  # one wrong output pixel
        return y

    return registry.Kernel(name="csr_f32_wrong", backend="reference", formats=("csr",),
                           prepare=ref.prepare, run=run, priority=-1000)


def test_runner_tiny(tiny_shapes, tmp_path, monkeypatch):
    monkeypatch.setitem(registry._KERNELS, "csr_f32_wrong", _wrong_kernel())
    cfg = BenchConfig(networks=[], shape_files=[tiny_shapes], structures=["kep", "random"],
                      sparsities=[0.8], batches=[1, 2], threads=[1],
                      kernels=["any_f32_ref:csr", "csr_f32_wrong", "auto"], **FAST)
    doc = run_bench(cfg)
    doc = json.loads(json.dumps(doc))  # JSON-ready
    assert len(doc["cases"]) == 2 * 2 * 2
    assert doc["contenders"]["competitors"] == ["torch_nchw", "torch_channels_last", "onnxruntime"]
    for case in doc["cases"]:
        for key in ("network", "layer", "shape", "batch", "threads", "structure", "sparsity",
                    "actual_sparsity", "nnz", "dense_flops", "useful_flops", "Ho", "Wo"):
            assert key in case
        by = {r["name"]: r for r in case["results"]}
        assert set(by) == {"torch_nchw", "torch_channels_last", "onnxruntime", "any_f32_ref:csr",
                           "csr_f32_wrong", "auto"}
        for name in ("torch_nchw", "torch_channels_last", "onnxruntime", "any_f32_ref:csr", "auto"):
            r = by[name]
            assert r["status"] == "ok", r
            assert r["time_s"] > 0 and r["p90_s"] >= r["time_s"] and r["repeats"] >= 2
            assert r["min_s"] <= r["time_s"] and r["t_s"] == r["time_s"]  # stat median
            assert r["useful_gflops"] == pytest.approx(case["useful_flops"] / r["t_s"] / 1e9)
            assert r["dense_gflops"] == pytest.approx(case["dense_flops"] / r["t_s"] / 1e9)
            assert set(r["speedup"]) == {"torch_nchw", "torch_channels_last", "onnxruntime"}
            assert r["speedup"]["onnxruntime"] == pytest.approx(by["onnxruntime"]["t_s"] / r["t_s"])
        bad = by["csr_f32_wrong"]
        assert bad["status"] == "wrong" and "refused" in bad["detail"]
        assert "time_s" not in bad and "speedup" not in bad
        assert by["auto"]["chosen"] != "csr_f32_wrong"
        assert case["dense_flops"] == 2 * case["O"] * case["C"] * 9 * case["batch"] * case["Ho"] * case["Wo"]
    s = doc["summary"]
    assert s["baseline"] == "onnxruntime" and s["focus"] == "all selected"
    assert {t["status"] for t in s["targets"]} == {"not measured"}
    e = s["geomean"][0]
    assert e["speedup"]["any_f32_ref:csr"]["n"] == 2 and "csr_f32_wrong" not in e["speedup"]
    png = tmp_path / "p.png"
    report.plot(doc, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = report.markdown(doc, "p.png")
    assert "| tiny/c1 |" in md and "wrong" in md and "NOT MEASURED" in md


def test_cli_bench(tiny_shapes, tmp_path, capsys):
    out_json, png, md = tmp_path / "r.json", tmp_path / "r.png", tmp_path / "r.md"
    rc = cli.main(["bench", "--quick", "--networks", "resnet56_cifar", "--layers", "layer3",
                   "--structures", "filter", "--kernels", "any_f32_ref:pattern",
                   "--competitors", "onnxruntime", "--budget", "0.005", "--stat", "min", "--json", str(out_json),
                   "--plot", str(png), "--markdown", str(md)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "geomean speedup vs onnxruntime" in text and "target" in text
    doc = json.loads(out_json.read_text())
    assert [c["layer"] for c in doc["cases"]] == ["layer3"]
    assert png.stat().st_size > 1000 and "r.png" in md.read_text()
    assert cli.main(["bench", "--from-json", str(out_json), "--table", "summary"]) == 0
    assert cli.main(["bench", "--list"]) == 0


@pytest.mark.parametrize("argv", [["--networks", "nope"], ["--sparsities", "1.5"],
                                  ["--structures", "blocks"], ["--kernels", "no_such_kernel"],
                                  ["--competitors", "tensorflow"], ["--layers", "zzz*"],
                                  ["--from-json", "/nonexistent.json"], ["--threads", "0"],
                                  ["--rounds", "0"], ["--json", "/nonexistent/dir/r.json"]])
def test_cli_bad_input(argv, capsys):
    assert cli.main(["bench", "--quick", "--table", "none", *argv]) == 2
    assert "kepsparse: error:" in capsys.readouterr().err
