"""In-process latency of one 3x3 conv layer through ``kepsparse.conv2d``: the numbers of
benchmarks/README.md's "Threads and cache lines" (no competitor; use ``kepsparse bench``
for ratios). Weights: the benchmark's own (``bench.cases.make_weight``), input standard
normal, padding 1.

    python benchmarks/layer_latency.py --channels 64 64 --size 56 --threads 2
    python benchmarks/layer_latency.py --channels 64 128 --size 56 --stride 2 --threads 2

Prints the min and median of --calls calls after --warmup calls.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import kepsparse
from kepsparse.bench.cases import make_weight
from kepsparse.formats import pack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, nargs=2, metavar=("C", "O"), default=(64, 64))
    ap.add_argument("--size", type=int, default=56, help="input height = width")
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--structure", default="kep", choices=("kep", "filter", "random"))
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--format", default="pattern", choices=("pattern", "csr", "dense"))
    ap.add_argument("--backend", default="auto", help="backend or kernel name")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=50)
    args = ap.parse_args()
    C, O = args.channels
    fmt = pack(make_weight(args.structure, args.sparsity, (O, C, 3, 3), 0), args.format)
    x = np.random.default_rng(0).standard_normal(
        (args.batch, C, args.size, args.size)).astype(np.float32)

    def call():
        return kepsparse.conv2d(x, fmt, None, args.stride, 1, backend=args.backend,
                                threads=args.threads)
    for _ in range(args.warmup):
        call()
    times = np.empty(args.calls)
    for i in range(args.calls):
        t0 = time.perf_counter()
        call()
        times[i] = time.perf_counter() - t0
    times *= 1e6
    print(f"{C}->{O} {args.size}x{args.size} s{args.stride} {args.structure} "
          f"{args.sparsity:g} batch {args.batch}, {args.threads} thread(s), {args.backend}: "
          f"min {times.min():.1f} us, median {np.median(times):.1f} us over {args.calls} calls")


if __name__ == "__main__":
    main()
