"""``kepsparse run`` / ``kepsparse tune`` / ``kepsparse bench-model`` (registered by cli.py)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..errors import InputError, UnsupportedError


def _load_graph_model(path):
    from .. import load
    m = load(path)
    if getattr(m, "graph", None) is None:
        raise UnsupportedError("this .kep file has no network graph (it was converted from a "
                               "checkpoint, not an ONNX model): only its layers can be run",
                               path=path, field="graph")
    return m


def _read_npy(spec: str):
    name, _, file = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path = Path(file)
    if not path.is_file():
        raise InputError("no such file", path=path, field="input")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"not a readable .npy array: {exc}", path=path, field="input") from None
    if not isinstance(arr, np.ndarray):
        raise InputError("expected a .npy array, got an archive", path=path, field="input")
    return name, arr


def _shape(text):
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(",") if v)
    except ValueError:
        raise InputError(f"expected e.g. 1,3,224,224, got {text!r}", field="input-shape") from None


def cmd_run(args) -> int:
    m = _load_graph_model(args.model)
    pairs = [_read_npy(s) for s in args.input]
    if args.tune:
        m.tune(input_shape=pairs[0][1].shape if len(pairs) == 1 else None, threads=args.threads)
    if all(not n for n, _ in pairs):
        feeds = [a for _, a in pairs]
        t0 = time.perf_counter()
        y = m(*feeds, backend=args.backend, threads=args.threads)
    else:
        if not all(n for n, _ in pairs):
            raise InputError("name all inputs (name=file.npy) or none", field="input")
        t0 = time.perf_counter()
        y = m(dict(pairs), backend=args.backend, threads=args.threads)
    dt = time.perf_counter() - t0
    outs = y if isinstance(y, tuple) else (y,)
    out = Path(args.output)
    if not out.parent.exists():
        raise InputError("output folder does not exist", path=out, field="output")
    if len(outs) == 1:
        np.save(out, outs[0], allow_pickle=False)
    else:
        np.savez(out, **{name: a for name, a in zip(m.graph.outputs, outs)})
    shapes = ", ".join("x".join(map(str, o.shape)) for o in outs)
    print(f"wrote {out}: {shapes} in {dt * 1e3:.1f} ms ({args.backend}, "
          f"{args.threads or 'default'} threads)")
    return 0


def cmd_tune(args) -> int:
    from .. import save
    m = _load_graph_model(args.model)

    def show(name, choice, row):
        if not args.quiet:
            label = choice.get("kernel", choice["impl"])
            print(f"  {name}: {label} [{choice.get('weight', 'dense')}] {choice['ms']:.3f} ms")

    rec = m.tune(input_shape=_shape(args.input_shape), batch=args.batch, threads=args.threads,
                 repeats=args.repeats, verbose=show)
    target = Path(args.output or args.model)
    save(m, target)  # atomic: temp file + rename
    total = sum(v["ms"] for v in rec["layers"].values())
    print(f"wrote {target}: kernel choice for {len(rec['layers'])} conv layers "
          f"(sum of best layer times {total:.2f} ms at batch {args.batch}, "
          f"{args.threads or 'default'} threads)")
    if args.json:
        print(json.dumps(rec, indent=2))
    return 0


def cmd_bench_model(args) -> int:
    from .bench import bench_model, table
    doc = bench_model(model=args.model, sparsity=args.sparsity, size=args.size,
                      batches=tuple(int(b) for b in args.batch.split(",")),
                      threads=args.threads, repeats=args.repeats, out_dir=args.out,
                      tune=not args.no_tune, backend=args.backend, keep=args.keep,
                      n_patterns=args.patterns)
    table(doc)
    print(f"wrote {Path(args.out) / Path(doc['kep_file']).stem}.json and .png")
    return 0 if all(r["outputs_match"] for r in doc["results"]) else 1


def register(sub) -> None:
    p = sub.add_parser("run", help="run a converted network (.kep with a graph) on .npy input")
    p.add_argument("model", help="the .kep file (converted from ONNX)")
    p.add_argument("--input", "-i", action="append", required=True,
                   help="input .npy (repeat for several inputs; name=file.npy to name them)")
    p.add_argument("-o", "--output", required=True, help=".npy to write (.npz if several)")
    p.add_argument("--backend", default="auto",
                   help="auto (tuned choice / best kernel), reference, numba, cpp, dense, or a "
                        "kernel name")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tune", action="store_true", help="measure the per-layer choice first")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("tune", help="choose each conv layer's fastest kernel by measurement "
                                    "and store the choice in the .kep file")
    p.add_argument("model")
    p.add_argument("--input-shape", default=None, help="e.g. 1,3,224,224 (default: the "
                                                       "model's declared input shape)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("-o", "--output", default=None, help="write here instead of in place")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("bench-model", help="end-to-end latency: KEP-pruned reference network "
                                           "through kepsparse vs onnxruntime and torch (dense)")
    p.add_argument("--model", default="resnet18",
                   help="resnet18, resnet34, resnet50, resnet56, resnet110, vgg16_bn, vgg16")
    p.add_argument("--sparsity", type=float, default=0.85)
    p.add_argument("--size", type=int, default=None, help="input height=width (default: the "
                                                          "network's: 224 or 32)")
    p.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--backend", default="auto")
    p.add_argument("--no-tune", action="store_true", help="skip the per-layer measurement")
    p.add_argument("--keep", type=int, default=2,
                   help="positions each KEP pattern keeps (at least what the sparsity needs; "
                        "default 2; the layer benchmark's 'kep' structure keeps 4)")
    p.add_argument("--patterns", type=int, default=8, help="patterns per layer (default 8)")
    p.add_argument("--out", default="benchmarks/results/e2e", help="folder for .json/.png/.kep")
    p.set_defaults(func=cmd_bench_model)
