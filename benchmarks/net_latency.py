"""In-process latency of a converted network: the numbers of benchmarks/README.md's
"Threads per call" session-4 paragraph and of results_manual.md's per-change ResNet-56 steps.

    python benchmarks/net_latency.py benchmarks/results/e2e/resnet56_s90_32px_t2.kep --threads 2
    KEPSPARSE_WORK_PER_THREAD=100000 python benchmarks/net_latency.py MODEL.kep --threads 2
    python benchmarks/net_latency.py MODEL.kep --python-loop   # without the C++ step loop
    python benchmarks/net_latency.py MODEL.kep --threads 2 --calls 3200 --blocks 8

The .kep files are written by `kepsparse bench-model` (not kept in git). Input: standard
normal, shape (batch, *the model's input shape). Prints the median and min of --calls calls
after --warmup calls; no competitor (use bench-model for ratios).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import kepsparse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--blocks", type=int, default=1,
                    help="also print the median of each of this many consecutive blocks of "
                         "calls (a phase change of the machine, or a choice settling, shows)")
    ap.add_argument("--python-loop", action="store_true",
                    help="run the steps in the Python loop (GraphModel.native_steps = False)")
    args = ap.parse_args()
    m = kepsparse.load(args.model)
    m.native_steps = not args.python_loop
    shape = [d for d in m.graph.inputs[0]["shape"][1:]]
    x = np.random.default_rng(0).standard_normal((args.batch, *shape)).astype(np.float32)
    for _ in range(args.warmup):
        m(x, threads=args.threads)
    ts = []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        m(x, threads=args.threads)
        ts.append(time.perf_counter() - t0)
    ts = np.asarray(ts) * 1e3
    if args.blocks > 1:
        print("block medians (ms):", " ".join(f"{np.median(b):.3f}"
                                              for b in np.array_split(ts, args.blocks)))
    print(f"{args.model}: batch {args.batch}, {args.threads} thread(s), "
          f"{'Python' if args.python_loop else 'C++'} step loop: median {np.median(ts):.3f} ms, "
          f"min {ts.min():.3f} ms over {args.calls} calls")


if __name__ == "__main__":
    main()
