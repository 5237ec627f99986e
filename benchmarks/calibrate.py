"""Re-measure the two calibrations the C++ engine uses (see benchmarks/README.md,
"Calibrations in the code"):

    python benchmarks/calibrate.py plans     # auto's plan choice: groups vs register blocks
    python benchmarks/calibrate.py threads   # 1 vs 2 threads on small KEP layers

``plans`` times both C++ plans of the pattern format on every ResNet-18 and CIFAR
ResNet-56 3x3 shape x {kep, filter, random} x {50, 80, 90, 95 %} at batch 1, 1 thread, fits
the group-plan cost (per group, per channel entry) in the units of the block plan's
ENTRY_COST, and reports how often ``min(estimate)`` picks a plan within 5 % of the faster.
``threads`` prints the small-layer table (run it with KEPSPARSE_WORK_PER_THREAD=0 so every
call may use both threads). Run on a quiet machine; progress is shown.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import kepsparse as ks
from kepsparse.bench.cases import load_networks, make_weight
from kepsparse.conv import prepared_for
from kepsparse.geometry import ConvGeometry
from kepsparse.kernels import cpp, get, select_for

BLOCKS, GROUPS = "pattern_f32_o1to8x128_avx512", "pattern_f32_grp4x96_avx512"


def best_us(fn, budget=0.15, at_least=5) -> float:
    fn()
    best, n, t_end = np.inf, 0, time.perf_counter() + budget
    while n < at_least or time.perf_counter() < t_end:
        t = time.perf_counter()
        fn()
        best, n = min(best, time.perf_counter() - t), n + 1
    return best * 1e6


def plans(args) -> None:
    from rich.progress import track
    kb, kg = get(BLOCKS), get(GROUPS)
    rows = []
    cases = [(net, L, st, sp) for net, layers in load_networks(["resnet18", "resnet56_cifar"]).items()
             for L in layers for st in ("kep", "filter", "random") for sp in (0.5, 0.8, 0.9, 0.95)]
    for net, L, st, sp in track(cases, description="timing both plans"):
        w = make_weight(st, sp, (L.out_channels, L.in_channels, *L.kernel), seed=0)
        fmt = ks.pack(w, "pattern")
        geo = ConvGeometry.make(L.stride, L.padding)
        x = np.random.default_rng(0).standard_normal((1, L.in_channels, *L.in_size)).astype(np.float32)
        pb, pg = prepared_for(fmt, kb), prepared_for(fmt, kg)
        tb = best_us(lambda: kb.run(pb, x, None, geo, False, 1))
        tg = best_us(lambda: kg.run(pg, x, None, geo, False, 1))
        bp, gp = pb.plan(1), pg.plan(1, L.out_channels)
        rows.append((f"{net}/{L.name} {st} {sp:g}", tb, tg,
                     bp.entries * cpp.ENTRY_COST["avx512"][bp.OB], gp.groups, gp.entries))
    t_b = np.array([r[1] for r in rows])
    t_g = np.array([r[2] for r in rows])
    # fit t_g / t_b ~ (a*G + b*E) / blocks_cost, relative least squares
    X = np.array([[r[4] / r[3], r[5] / r[3]] for r in rows])
    a, b = np.linalg.lstsq(X, t_g / t_b, rcond=None)[0]
    print(f"fit: groups cost = {a:.2f} x groups + {b:.2f} x entries "
          f"(in use: {cpp.GROUP_COST} / {cpp.GROUP_ENTRY_COST})")
    for ga, gb, label in ((a, b, "fit"), (cpp.GROUP_COST, cpp.GROUP_ENTRY_COST, "in use")):
        pick = np.where(ga * X[:, 0] + gb * X[:, 1] < 1.0, t_g, t_b)
        loss = pick / np.minimum(t_b, t_g)
        print(f"{label}: within 5 % of the faster plan on {(loss <= 1.05).sum()} of {len(rows)}"
              f" layers; geometric-mean loss {np.exp(np.log(loss).mean()) - 1:.1%}, worst "
              f"{loss.max() - 1:.0%} ({rows[int(loss.argmax())][0]})")


def threads(args) -> None:
    rng = np.random.default_rng(0)
    print("| layer (C = O, H = W) | nnz x pixels | 1 thread us | 2 threads us | 1t / 2t |")
    print("|---|---:|---:|---:|---:|")
    for C, hw in [(16, 8), (16, 16), (16, 32), (32, 16), (64, 8), (64, 16), (64, 32),
                  (128, 14), (64, 56)]:
        w = make_weight("kep", 0.9, (C, C, 3, 3), seed=0)
        fmt = ks.pack(w, "pattern")
        k = select_for(fmt)
        p, g = prepared_for(fmt, k), ConvGeometry.make(1, 1)
        x = rng.standard_normal((1, C, hw, hw)).astype(np.float32)
        t1 = best_us(lambda: k.run(p, x, None, g, False, 1), budget=0.3)
        t2 = best_us(lambda: k.run(p, x, None, g, False, 2), budget=0.3)
        nnz = int((w != 0).sum())
        print(f"| {C}, {hw} | {nnz * hw * (hw + 2):,} | {t1:.1f} | {t2:.1f} | {t1 / t2:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["plans", "threads"])
    args = p.parse_args()
    if get(BLOCKS).unavailable_reason() or get(GROUPS).unavailable_reason():
        raise SystemExit("needs the AVX-512 C++ kernels (this CPU or build lacks them)")
    {"plans": plans, "threads": threads}[args.what](args)


if __name__ == "__main__":
    main()
