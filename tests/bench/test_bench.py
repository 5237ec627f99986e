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


def _row(name, kind, backend, fmt, t, base_t=None, **extra):
    r = {"name": name, "kind": kind, "backend": backend, "format": fmt, "status": "ok",
         "detail": "", "time_s": t, "min_s": t, "p90_s": t, "t_s": t, "useful_gflops": 1.0 / t / 1e9,
         "dense_gflops": 2.0 / t / 1e9, **extra}
    if base_t is not None:
        r["speedup"] = {"onnxruntime": base_t / t}
    return r


def _synthetic_doc(auto_t=0.5, lucky_t=0.1, auto_kernel="pattern_f32_x_cpp"):
    """ResNet-18 KEP@90% cases, batch 1, 2 threads: onnxruntime 1.0 s, auto ``auto_t``, a
    lucky C++ kernel ``lucky_t``, the pattern numba kernel 0.75 s."""
    cases = []
    for layer in ("layer1", "layer2"):
        results = [_row("onnxruntime", "competitor", "onnxruntime", "dense", 1.0, 1.0),
                   _row("pattern_f32_x_cpp", "kernel", "cpp", "pattern", 0.5, 1.0),
                   _row("csr_f32_lucky_cpp", "kernel", "cpp", "csr", lucky_t, 1.0),
                   _row("pattern_f32_numba", "kernel", "numba", "pattern", 0.75, 1.0),
                   _row("auto", "auto", "auto", "pattern", auto_t, 1.0, chosen=auto_kernel)]
        cases.append({"network": "resnet18", "layer": layer, "shape": "8->8 8x8 3x3", "batch": 1,
                      "threads": 2, "structure": "kep", "sparsity": 0.9, "actual_sparsity": 0.9,
                      "useful_flops": 1.0, "dense_flops": 2.0, "results": results})
    doc = {"kind": "kepsparse-bench", "machine": {"cpu_count": 2}, "command": "test",
           "settings": {"stat": "median", "warmup_s": 0, "budget_s": 0, "min_repeats": 1,
                        "tolerance": 1e-4},
           "contenders": {"kernels": ["pattern_f32_x_cpp", "csr_f32_lucky_cpp", "pattern_f32_numba"],
                          "auto": True, "competitors": ["onnxruntime"]},
           "cases": cases}
    doc["summary"] = report.summarize(doc)
    return doc


def test_targets_judged_on_auto_not_best_of_n(tmp_path):
    doc = _synthetic_doc()
    kep90 = next(x for x in doc["summary"]["targets"] if x["target"].startswith("KEP pattern @90%: auto (C++) >="))
    # auto is 2x onnxruntime; the lucky best-of-N kernel (10x) must not be what is judged
    assert kep90["contender"] == "auto" and kep90["value"] == pytest.approx(2.0)
    assert kep90["status"] == "missed" and kep90["n"] == 2
    useful = next(x for x in doc["summary"]["targets"] if "GFLOP" in x["target"])
    assert useful["value"] == pytest.approx(1.0 / 0.5 / 1e9)
    numba = next(x for x in doc["summary"]["targets"] if "numba" in x["target"])
    assert numba["value"] == pytest.approx(0.75 / 0.5) and numba["status"] == "met"  # pattern numba / auto
    e = doc["summary"]["geomean"][0]
    assert e["speedup"]["auto"]["geomean"] == pytest.approx(2.0)
    assert e["speedup"]["best-of-N cpp"]["geomean"] == pytest.approx(10.0)  # informational series
    md = report.markdown(doc)
    assert "Judged on `auto`" in md and "best-of-N kernel (N)" in md
    assert "| csr_f32_lucky_cpp (3) |" in md and "| pattern_f32_x_cpp | " in md
    assert "best cpp" not in md.replace("best-of-N cpp", "")
    assert "best-of-N" in report.summary_line(doc) and report.summary_line(doc).index("auto 2.00x") \
        < report.summary_line(doc).index("best-of-N cpp")
    png = tmp_path / "s.png"
    report.plot(doc, png)
    assert png.stat().st_size > 1000


def test_targets_note_when_auto_ran_numba_or_is_missing():
    doc = _synthetic_doc(auto_kernel="pattern_f32_numba")
    kep90 = doc["summary"]["targets"][0]
    assert "non-C++ kernel on 2 of 2 layers" in kep90["note"]
    numba = next(x for x in doc["summary"]["targets"] if "numba" in x["target"])
    assert numba["status"] == "not measured"  # no C++ kernel to compare with
    doc = _synthetic_doc()
    doc["contenders"]["auto"] = False
    for c in doc["cases"]:
        c["results"] = [r for r in c["results"] if r["name"] != "auto"]
    s = report.summarize(doc)
    assert {t["status"] for t in s["targets"]} == {"not measured"}
    assert "--kernels including auto" in s["targets"][0]["note"]
    assert s["targets"][1]["note"] == "this structure and sparsity is not in this run"


def test_from_json_rerender_judges_auto(tmp_path):
    doc = _synthetic_doc()
    del doc["summary"]
    src, md = tmp_path / "r.json", tmp_path / "r.md"
    src.write_text(json.dumps({**doc, "version": 1}))
    assert cli.main(["bench", "--from-json", str(src), "--table", "summary", "--markdown", str(md),
                     "--plot", str(tmp_path / "r.png")]) == 0
    text = md.read_text()
    assert "KEP pattern @90%: auto (C++) >= 6x onnxruntime: 2.00x -> MISSED" in text


def test_codegen_probe_checks_and_times_a_layer():
    """benchmarks/codegen_probe.py (session 8's probe of code generated per layer) compiles a
    small layer, checks it against the reference and times it."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from kepsparse.kernels.cpp import _features
    if shutil.which("g++") is None or not _features().get("avx512f"):
        pytest.skip("needs g++ and an AVX-512 CPU")
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "codegen_probe.py"
    out = subprocess.run([sys.executable, str(script), "--channels", "8", "8", "--size", "8",
                          "--calls", "20"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "generated: min" in out.stdout and "kepsparse" in out.stdout
