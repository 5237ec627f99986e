"""Plots for filter-pruning reports (matplotlib, Agg backend; imported only when plotting)."""
from __future__ import annotations


def plot_report(report: dict, path) -> None:
    """Channels before/after per conv and the fine-tuning accuracy curve of one run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["layers"]
    names = list(layers)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(names))
    a.bar(x, [layers[n]["channels_before"] for n in names], color="#cccccc", label="before")
    a.bar(x, [layers[n]["channels_after"] for n in names], color="#3367d6", label="after")
    a.set_xticks(list(x))
    a.set_xticklabels(names, rotation=90, fontsize=6 if len(names) > 12 else 8)
    a.set_ylabel("output channels")
    a.set_title(f"{report['method']}: FLOPs -{report['flops']['reduction']:.1%}")
    a.legend()
    hist = [h for h in report.get("finetune_history", []) if "accuracy" in h]
    acc = report["accuracy"]
    b.axhline(acc["dense"], color="gray", ls="--", label="dense")
    if hist:
        b.plot([0] + [h["epoch"] for h in hist], [acc["after_removal"]] + [h["accuracy"] for h in hist],
               marker="o", label=f"fine-tune ({report['config']['finetune']})")
    b.set_xlabel("epoch")
    b.set_ylabel("test accuracy (%)")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_comparison(rows: list, path, dense: float) -> None:
    """Grouped bars: final accuracy of each criterion under each fine-tuning scheme."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = list(dict.fromkeys(r["method"] for r in rows))
    schemes = list(dict.fromkeys(r["finetune"] for r in rows))
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(1, len(schemes))
    for j, s in enumerate(schemes):
        vals = [next((r["final"] for r in rows if r["method"] == m and r["finetune"] == s),
                     np.nan) for m in methods]
        ax.bar(np.arange(len(methods)) + j * width, vals, width, label=s)
    ax.axhline(dense, color="gray", ls="--", label="dense")
    ax.axhline(dense - 2, color="red", ls=":", label="dense - 2 pts")
    ax.set_xticks(np.arange(len(methods)) + width * (len(schemes) - 1) / 2)
    ax.set_xticklabels(methods)
    lo = min([r["final"] for r in rows] + [dense - 2]) - 2
    ax.set_ylim(lo, 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits CNN, filter pruning at equal FLOPs budget")
    ax.legend(ncol=len(schemes) + 2, fontsize=8, loc="lower center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
