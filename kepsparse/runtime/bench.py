"""End-to-end benchmark: a reference network, KEP-pruned, run through kepsparse, onnxruntime
(dense) and torch (dense) in the same process run.

    kepsparse bench-model --model resnet18 --sparsity 0.85 --size 224 --threads 2

Steps: in a child process (torch), build the network (``kepsparse.nets``), give its
BatchNorms non-trivial statistics, KEP-prune every conv except the first
(``netutil.kep_prune_``; the classifier stays dense), export to ONNX and time torch (dense).
Then, in this process (no torch: its OpenMP pool would compete with the others on 2 cores),
convert to .kep (BN folded, ReLU fused), tune the per-layer kernel choice, and time
kepsparse and onnxruntime round-robin (one call of each per round, so machine noise hits both
alike): median, p90 and min latency per batch size. kepsparse's output is checked against
onnxruntime's (and torch's) before timing. Writes <out>/<tag>.json, .png, .onnx and .kep.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from ..errors import InputError

NETS = {"resnet18": ("resnet", 224), "resnet50": ("resnet", 224), "resnet34": ("resnet", 224),
        "resnet56": ("resnet", 32), "resnet110": ("resnet", 32), "vgg16_bn": ("vgg", 32),
        "vgg16": ("vgg", 32)}


def build_net(name: str, seed: int = 0):
    import importlib
    if name not in NETS:
        raise InputError(f"unknown model {name!r}; choose from {', '.join(sorted(NETS))}",
                         field="model")
    mod = importlib.import_module(f"kepsparse.nets.{NETS[name][0]}")
    net = mod.MODELS[name](seed=seed)
    from ..nets.resnet import randomize_bn
    return randomize_bn(net, seed).eval()


def _stats(ts) -> dict:
    a = np.asarray(ts) * 1e3
    return {"median_ms": round(float(np.median(a)), 3),
            "p90_ms": round(float(np.percentile(a, 90)), 3),
            "min_ms": round(float(a.min()), 3), "runs": len(a)}


def torch_part(model: str, sparsity: float, size: int, batches, threads: int, repeats: int,
               warmup: int, onnx_path: str, keep: int, n_patterns: int, seed: int) -> dict:
    """Runs in a child process: build + prune + export the network, time torch (dense)."""
    import torch

    from ..nets.flops import count
    from .netutil import export_onnx, kep_prune_
    torch.set_num_threads(threads)
    shape = (3, size, size)
    net = build_net(model, seed)
    achieved = kep_prune_(net, sparsity, keep=keep, n_patterns=n_patterns) if sparsity > 0 else {}
    export_onnx(net, shape, onnx_path)
    timing, outputs = {}, {}
    for batch in batches:
        x = torch.from_numpy(_input(batch, shape, seed))
        with torch.no_grad():
            for _ in range(warmup):
                net(x)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                y = net(x)
                ts.append(time.perf_counter() - t0)
        timing[str(batch)] = _stats(ts)
        outputs[str(batch)] = y.numpy().tolist()
    dense, sparse = count(build_net(model, seed), shape), count(net, shape, nonzero=True)
    return {"timing": timing, "outputs": outputs,
            "achieved": {k: float(v) for k, v in achieved.items()},
            "flops_dense": dense["flops"], "flops_nonzero": sparse["flops"],
            "params_dense": dense["params"], "params_nonzero": sparse["params"]}


def _input(batch, shape, seed):
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


def bench_model(model: str = "resnet18", sparsity: float = 0.85, size: int | None = None,
                batches=(1, 8), threads: int = 2, repeats: int = 20, warmup: int = 3,
                out_dir="benchmarks/results/e2e", tune: bool = True, backend: str = "auto",
                keep: int = 2, n_patterns: int = 8, seed: int = 0, log=print) -> dict:
    """Torch (build, prune, export, dense timing) runs in a child process, so its OpenMP
    pool never competes with kepsparse's or onnxruntime's; kepsparse and onnxruntime are
    timed round-robin in this process (which never imports torch)."""
    import subprocess
    import sys

    import onnxruntime as ort

    from .. import convert, load, save

    if model not in NETS:
        raise InputError(f"unknown model {model!r}; choose from {', '.join(sorted(NETS))}",
                         field="model")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = size or NETS[model][1]
    shape = (3, size, size)
    tag = f"{model}_s{int(round(sparsity * 100))}_{size}px_t{threads}"
    if (keep, n_patterns) != (2, 8):  # the files of the default masks keep their names
        tag += f"_k{keep}p{n_patterns}"
    onnx_path, kep_path = out / f"{tag}.onnx", out / f"{tag}.kep"
    args = dict(model=model, sparsity=sparsity, size=size, batches=list(batches),
                threads=threads, repeats=repeats, warmup=warmup, onnx_path=str(onnx_path),
                keep=keep, n_patterns=n_patterns, seed=seed)
    code = ("import json, sys; from kepsparse.runtime.bench import torch_part; "
            "print('@@' + json.dumps(torch_part(**json.loads(sys.argv[1]))))")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"the torch part of the benchmark failed:\n{proc.stderr[-3000:]}")
    tp = json.loads(proc.stdout.split("@@", 1)[1])
    achieved = tp["achieved"]
    t0 = time.perf_counter()
    m = convert(onnx_path)
    save(m, kep_path)
    m = load(kep_path)
    log(f"{model}: pruned {len(achieved)} convs to {np.mean(list(achieved.values()) or [0]):.1%} "
        f"mean sparsity; converted in {time.perf_counter() - t0:.1f}s")
    if tune and backend == "auto":
        t0 = time.perf_counter()
        m.tune(input_shape=(1, *shape), threads=threads)
        save(m, kep_path)
        log(f"tuned {len(m.layers)} conv layers in {time.perf_counter() - t0:.1f}s")
    kernels = m.describe_kernels(backend, threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    def timed(f) -> list:
        for _ in range(warmup):
            f()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return ts

    results = []
    for batch in batches:
        x = _input(batch, shape, seed)
        # Each engine is timed in its own block, never interleaved: onnxruntime's (and
        # OpenMP's) pools keep spinning on both cores after a call and would steal them from
        # whichever engine runs next in this process (measured: kepsparse 22.6 ms next to a
        # spinning session vs 10.0 ms alone, ResNet-18, 2 threads). torch runs in a child
        # process; the onnxruntime session lives only for its own block.
        times = {"kepsparse": timed(lambda: m(x, backend=backend, threads=threads))}
        y_k = m(x, backend=backend, threads=threads)
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        times["onnxruntime"] = timed(lambda: sess.run(None, {"x": x})[0])
        y_o = sess.run(None, {"x": x})[0]
        del sess  # joins its threads before the next batch's kepsparse block
        y_t = np.asarray(tp["outputs"][str(batch)], np.float32)
        err = float(np.abs(y_k - y_o).max())
        tol = 1e-4 * float(np.abs(y_o).max()) + 1e-5
        row = {"batch": batch, "max_abs_err_vs_ort": err, "tolerance": tol,
               "outputs_match": err <= tol,
               "torch_vs_ort_err": float(np.abs(y_t - y_o).max()),
               **{k: _stats(v) for k, v in times.items()}, "torch": tp["timing"][str(batch)]}
        row["speedup_vs_ort"] = round(row["onnxruntime"]["median_ms"] /
                                      row["kepsparse"]["median_ms"], 2)
        row["speedup_vs_ort_min"] = round(row["onnxruntime"]["min_ms"] /
                                          row["kepsparse"]["min_ms"], 2)
        row["speedup_vs_torch"] = round(row["torch"]["median_ms"] /
                                        row["kepsparse"]["median_ms"], 2)
        results.append(row)
        log(f"batch {batch}: kepsparse {row['kepsparse']['median_ms']:.2f} ms, onnxruntime "
            f"{row['onnxruntime']['median_ms']:.2f} ms, torch {row['torch']['median_ms']:.2f} ms "
            f"-> {row['speedup_vs_ort']}x vs ORT (outputs match: {row['outputs_match']})")
    try:
        load_avg = os.getloadavg()[0]
    except OSError:
        load_avg = None
    doc = {"model": model, "input_shape": list(shape), "sparsity_target": sparsity,
           "kep_masks": {"keep_per_pattern": keep, "patterns": n_patterns},
           "achieved_sparsity": {k: round(float(v), 4) for k, v in achieved.items()},
           "threads": threads, "repeats": repeats, "backend": backend, "tuned": tune,
           "flops_dense": tp["flops_dense"], "flops_nonzero": tp["flops_nonzero"],
           "params_dense": tp["params_dense"], "params_nonzero": tp["params_nonzero"],
           "kernels": kernels, "results": results,
           "note": "torch timed in a child process (same run, same machine), kepsparse and "
                   "onnxruntime round-robin in the parent",
           "machine": {"cpu": platform.processor() or platform.machine(),
                       "cores": os.cpu_count(), "python": platform.python_version(),
                       "load_average_1min": load_avg},
           "kep_file": str(kep_path), "onnx_file": str(onnx_path),
           "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    (out / f"{tag}.json").write_text(json.dumps(doc, indent=2))
    try:
        plot(doc, out / f"{tag}.png")
    except Exception as exc:  # noqa: BLE001 - a missing plotting backend must not lose numbers
        log(f"(plot skipped: {exc})")
    return doc


def table(doc) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"{doc['model']} {'x'.join(map(str, doc['input_shape']))}, "
                    f"{doc['sparsity_target']:.0%} KEP"
                    + (" (patterns keep {keep_per_pattern})".format(**doc["kep_masks"])
                       if "kep_masks" in doc else "") + f", {doc['threads']} threads")
    for col in ("batch", "engine", "median ms", "p90 ms", "min ms", "speedup (median)",
                "match ORT"):
        t.add_column(col, justify="right" if col != "engine" else "left")
    for r in doc["results"]:
        base = r["onnxruntime"]["median_ms"]
        for eng in ("kepsparse", "onnxruntime", "torch"):
            s = r[eng]
            t.add_row(str(r["batch"]), eng, f"{s['median_ms']:.2f}", f"{s['p90_ms']:.2f}",
                      f"{s['min_ms']:.2f}",
                      f"{base / s['median_ms']:.2f}x vs ORT",
                      ("yes" if r["outputs_match"] else "NO") if eng == "kepsparse" else "")
        t.add_section()
    Console().print(t)


def plot(doc, path) -> None:
    """One panel per batch size: median latency per engine, whisker to p90, ratio vs ORT."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    engines = ("kepsparse", "onnxruntime", "torch")
    colors = ("tab:blue", "tab:orange", "tab:green")
    n = len(doc["results"])
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.5, 3.4), squeeze=False)
    for ax, r in zip(axes[0], doc["results"]):
        med = [r[e]["median_ms"] for e in engines]
        p90 = [r[e]["p90_ms"] - r[e]["median_ms"] for e in engines]
        ax.bar(range(3), med, yerr=[[0] * 3, p90], color=colors, capsize=3)
        ax.set_xticks(range(3), engines, fontsize=8)
        ax.set_title(f"batch {r['batch']}: {r['speedup_vs_ort']}x vs ORT", fontsize=9)
        ax.set_ylabel("ms (median, whisker p90)", fontsize=8)
    fig.suptitle(f"{doc['model']} {doc['input_shape'][1]}px, {doc['sparsity_target']:.0%} KEP, "
                 f"{doc['threads']} thread(s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
