"""Side-by-side comparison of the five filter criteria x fine-tuning schemes on the digits CNN,
same FLOPs budget, same seed, same fine-tuning budget.

    python -m kepsparse.prune.filters.bench --flops-reduction 0.5 --epochs 10 \
        --out benchmarks/filter_pruning.md --plot benchmarks/filter_pruning.png

Each criterion prunes once (fine-tuning ``none``); the pruned network is then copied and
fine-tuned with each scheme from the same state and seed. Writes a Markdown table (and the raw
rows as JSON next to it).
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path


def run(flops_reduction=(0.5,), epochs=10, seed=0, schemes=("plain", "kd", "mutual"),
        methods=None, train_epochs=30, threads=2, progress=True):
    from .. import common
    from ...nets.digits import train_digits_cnn
    from ..finetune import finetune
    from .criteria import CRITERIA
    from .pipeline import filter_prune

    methods = methods or list(CRITERIA)
    common.set_threads(threads)
    t0 = time.perf_counter()
    dense, loaders, acc_dense = train_digits_cnn(seed=seed, epochs=train_epochs, threads=threads)
    rows = []
    for budget, m in [(b, m) for b in flops_reduction for m in methods]:
        t = time.perf_counter()
        pruned, rep = filter_prune(dense, loaders, m, flops_reduction=budget,
                                   finetune_scheme="none", seed=seed, threads=threads,
                                   progress=False)
        prune_s = time.perf_counter() - t
        for s in schemes:
            t = time.perf_counter()
            student = copy.deepcopy(pruned)
            hist = finetune(student, loaders, s, teacher=dense, epochs=epochs, seed=seed,
                            progress=progress)
            acc = common.evaluate(student, loaders["test"])
            rows.append({"budget": budget, "method": m, "finetune": s, "dense": acc_dense,
                         "after_removal": rep["accuracy"]["after_removal"], "final": acc,
                         "drop": acc_dense - acc, "flops_before": rep["flops"]["before"],
                         "flops_after": rep["flops"]["after"],
                         "flops_reduction": rep["flops"]["reduction"],
                         "params_before": rep["params"]["before"],
                         "params_after": rep["params"]["after"],
                         "channels": {n: r["channels_after"] for n, r in rep["layers"].items()},
                         "prune_seconds": round(prune_s, 1),
                         "finetune_seconds": round(time.perf_counter() - t, 1),
                         "history": hist})
            print(f"{budget:.0%} {m:10s} {s:6s} removal {rep['accuracy']['after_removal']:6.2f}%  final "
                  f"{acc:6.2f}%  (dense {acc_dense:.2f}%)", flush=True)
    return {"dense": acc_dense, "rows": rows, "seconds": round(time.perf_counter() - t0, 1),
            "threads": threads}


def markdown(result: dict, command: str, epochs: int, seed: int) -> str:
    all_rows = result["rows"]
    dense = result["dense"]
    r0 = all_rows[0]
    lines = [
        "# Filter pruning on the digits CNN: five criteria x fine-tuning schemes",
        "",
        f"Command: `{command}`",
        "",
        f"Dense digits CNN (sklearn digits, 1,437 train / 360 test images, seed {seed}): "
        f"**{dense:.2f}%** test accuracy, {r0['params_before']:,} params, "
        f"{r0['flops_before']:,} FLOPs (MACs + bias adds, `kepsparse.nets.flops`).",
        f"Same FLOPs budget for every criterion; fine-tuning {epochs} epochs (Adam, lr 1e-3, "
        "cosine) from the same pruned state and seed; kd: alpha 0.5, T cosine 8 -> 2, teacher = "
        "dense; mutual: peer = a dense copy (trained too). One test image = 0.28 points.",
        "Formulations are reconstructions from the papers' abstracts (see "
        "`kepsparse/prune/filters/criteria.py`).",
    ]
    for budget in dict.fromkeys(r["budget"] for r in all_rows):
        rows = [r for r in all_rows if r["budget"] == budget]
        schemes = list(dict.fromkeys(r["finetune"] for r in rows))
        methods = list(dict.fromkeys(r["method"] for r in rows))
        lines += [
            "",
            f"## FLOPs reduction target {budget:.0%}",
            "",
            "| criterion | FLOPs after (reduction) | params after | channels kept | acc. right "
            "after removal | " + " | ".join(f"{s} | drop ({s})" for s in schemes) + " |",
            "|---|---|---|---|---|" + "---|---|" * len(schemes),
        ]
        for m in methods:
            rs = {r["finetune"]: r for r in rows if r["method"] == m}
            r = next(iter(rs.values()))
            ch = "/".join(str(v) for v in r["channels"].values())
            cells = " | ".join(f"{rs[s]['final']:.2f}% | {rs[s]['drop']:+.2f}" for s in schemes)
            lines.append(f"| {m} | {r['flops_after']:,} (-{r['flops_reduction']:.1%}) | "
                         f"{r['params_after']:,} | {ch} | {r['after_removal']:.2f}% | {cells} |")
        worst = max(r["drop"] for r in rows)
        lines += ["", f"Largest drop across the {len(rows)} runs: {worst:.2f} points "
                  f"({'within' if worst <= 2 else 'NOT within'} the 2-point target)."]
    lines += ["", f"Total wall time {result['seconds']:.0f} s on a shared 2-core machine "
              f"({platform.machine()}, torch threads {result['threads']}).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flops-reduction", default="0.5",
                   help="one budget or several, comma-separated (default 0.5)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schemes", default="plain,kd,mutual")
    p.add_argument("--methods", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/filter_pruning.md")
    p.add_argument("--plot", default="benchmarks/filter_pruning.png")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    budgets = tuple(float(v) for v in str(a.flops_reduction).split(","))
    res = run(budgets, a.epochs, a.seed, tuple(a.schemes.split(",")),
              a.methods.split(",") if a.methods else None, threads=a.threads,
              progress=not a.no_progress)
    command = "python -m kepsparse.prune.filters.bench " + " ".join(argv if argv is not None
                                                                    else sys.argv[1:])
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(res, command.strip(), a.epochs, a.seed))
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    if a.plot:
        from .report import plot_comparison
        plot_comparison(res["rows"], a.plot, res["dense"])
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
