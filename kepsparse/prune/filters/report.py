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
    """Grouped bars per budget: final accuracy of each criterion under each fine-tuning scheme,
    and (hatched) the accuracy right after removal."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    budgets = list(dict.fromkeys(r.get("budget", 0.0) for r in rows))
    fig, axes = plt.subplots(1, len(budgets), figsize=(8 * len(budgets), 4.2), squeeze=False)
    lo = min([r["after_removal"] for r in rows] + [dense - 2]) - 2
    for ax, budget in zip(axes[0], budgets):
        rs = [r for r in rows if r.get("budget", 0.0) == budget]
        methods = list(dict.fromkeys(r["method"] for r in rs))
        schemes = list(dict.fromkeys(r["finetune"] for r in rs))
        width = 0.8 / (len(schemes) + 1)
        x = np.arange(len(methods))
        removal = [next(r["after_removal"] for r in rs if r["method"] == m) for m in methods]
        ax.bar(x, removal, width, color="#dddddd", hatch="//", label="no fine-tuning")
        for j, s in enumerate(schemes):
            vals = [next((r["final"] for r in rs if r["method"] == m and r["finetune"] == s),
                         np.nan) for m in methods]
            ax.bar(x + (j + 1) * width, vals, width, label=s)
        ax.axhline(dense, color="gray", ls="--", label="dense")
        ax.axhline(dense - 2, color="red", ls=":", label="dense - 2 pts")
        ax.set_xticks(x + width * len(schemes) / 2)
        ax.set_xticklabels(methods)
        ax.set_ylim(lo, 100)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"digits CNN, FLOPs -{budget:.0%} (same budget, seed)")
        ax.legend(ncol=3, fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
