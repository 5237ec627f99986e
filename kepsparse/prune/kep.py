"""KEP - Kernel Elements Pruning: a prior-knowledge mask, a controllable penalty, hard pruning
and masked fine-tuning, for any torch model made of Conv2d layers and any DataLoader.

Zhang, Zhao, Tian, Duan, "Intermediate-grained kernel elements pruning with structured
sparsity", Neural Networks 180 (2024) 106708, doi:10.1016/j.neunet.2024.106708.

Only the paper's abstract is public. What follows is kepsparse's *reconstruction* from that
abstract and well-documented prior work (PatDNN pattern libraries, stripe-wise pruning,
growing regularization of Wang et al., ICLR 2021) - not the authors' code:

1. Prior-knowledge mask M_l, chosen inside the constraint set from the trained weights
   (``kepsparse.prune.masks``: unit = kernel element positions shared per plane with a pattern
   library of size P, per filter, or per layer; importance = L1 or L2 norm of the unit; at most
   (1 - p_l) of a layer's weights kept; optional keep-centre; per-layer or global target).
2. Controllable penalty: loss = CE + lambda(t) * sum_l ||W_l * (1 - M_l)||^2 with lambda(t)
   growing on a schedule (``start`` + ``step`` every ``interval`` optimizer steps, up to
   ``cap``), so the elements outside M shrink smoothly towards 0 while the network adapts.
3. Hard pruning W <- W * M, then fine-tuning with M fixed: gradients outside M are masked and
   the weights are re-masked after every step, so pruned elements stay exactly 0.

Layers excluded by default: the first Conv2d (few weights, most sensitive) and a Conv2d that is
the network's last weight layer (a conv classifier); a Linear classifier is never pruned.
``sparsity_over="model"`` (default) makes the target the sparsity of *all* conv weights of
the model - the excluded layers stay dense, so the pruned layers go a little sparser;
``"pruned"`` applies the rate to the pruned layers only.

    pruned, report = kep_prune(model, {"train": train_loader, "test": test_loader}, sparsity=0.8)
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from ..errors import InputError, UnsupportedError
from ..nets import flops
from . import common
from .masks import LayerMask, check_sparsity, select_masks

DOI = "10.1016/j.neunet.2024.106708"
NOTE = ("KEP formulation reconstructed from the paper's abstract (doi:" + DOI + "): "
        "prior-knowledge mask + growing L2 penalty outside it + hard prune + masked fine-tuning")


@dataclass
class PenaltySchedule:
    """lambda(t) = min(cap, start + step * floor(t / interval)), t = optimizer steps so far."""
    start: float = 0.0
    step: float = 0.05
    cap: float = 1.0
    interval: int = 5

    def __post_init__(self):
        for name in ("start", "step", "cap"):
            v = float(getattr(self, name))
            if not np.isfinite(v) or v < 0:
                raise InputError(f"must be a finite number >= 0, got {v}", field=f"lambda_{name}")
        if int(self.interval) < 1:
            raise InputError(f"must be >= 1 optimizer step, got {self.interval}",
                             field="lambda_interval")

    def value(self, t: int) -> float:
        return float(min(self.cap, self.start + self.step * (int(t) // int(self.interval))))


@dataclass
class KEPConfig:
    """Every knob of KEP (see the module doc); ``kep_prune(**kwargs)`` accepts these names plus
    ``lambda_start``, ``lambda_step``, ``lambda_cap``, ``lambda_interval``."""
    sparsity: float | dict = 0.8
    scope: str = "plane"                # plane | filter | layer
    patterns: int = 8                   # library size P (plane scope)
    keep_per_pattern: int | None = None  # k; None: 4/9 of the kernel or what the rate needs
    metric: str = "l2"                  # l1 | l2
    keep_center: bool = False
    global_target: bool = False
    sparsity_over: str = "model"        # model | pruned
    exclude: tuple | None = None        # None: first conv + a conv classifier; () prunes all
    penalty: PenaltySchedule = field(default_factory=PenaltySchedule)
    penalty_epochs: int = 8
    penalty_tol: float = 1e-3           # stop the penalty phase once ||W(1-M)||/||W|| < tol
    finetune_epochs: int = 10
    lr: float = 0.01                    # penalty phase
    finetune_lr: float = 0.01           # fine-tuning, cosine-annealed to 0
    optimizer: str = "sgd"              # sgd | adam
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    threads: int | None = 2
    progress: bool = False

    def to_json(self) -> dict:
        d = asdict(self)
        d["exclude"] = None if self.exclude is None else list(self.exclude)
        return d


def make_config(config: KEPConfig | None = None, **kwargs) -> KEPConfig:
    config = config or KEPConfig()
    pen = {k[len("lambda_"):]: kwargs.pop(k) for k in list(kwargs) if k.startswith("lambda_")}
    names = {f.name for f in fields(KEPConfig)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise InputError(f"unknown KEP option(s) {', '.join(unknown)}", field=unknown[0])
    config = replace(config, **kwargs)
    if pen:
        config = replace(config, penalty=replace(config.penalty, **pen))
    if config.sparsity_over not in ("model", "pruned"):
        raise InputError(f"must be 'model' or 'pruned', got {config.sparsity_over!r}",
                         field="sparsity_over")
    for name in ("penalty_epochs", "finetune_epochs"):
        if int(getattr(config, name)) < 0:
            raise InputError(f"must be >= 0, got {getattr(config, name)}", field=name)
    for name in ("lr", "finetune_lr"):
        v = float(getattr(config, name))
        if not v > 0 or not np.isfinite(v):
            raise InputError(f"must be > 0, got {v}", field=name)
    return config


# ----------------------------------------------------------------------------- layers

def default_exclude(model) -> list[str]:
    """The first Conv2d, and the last weight layer when it is a Conv2d (a conv classifier)."""
    torch = common._torch()
    convs = common.conv_layers(model)
    if not convs:
        return []
    out = [next(iter(convs))]
    layers = common.weight_layers(model)
    last = next(reversed(layers))
    if isinstance(layers[last], torch.nn.Conv2d) and last not in out:
        out.append(last)
    return out


def prunable_layers(model, exclude=None) -> tuple[dict, list[str]]:
    """(name -> Conv2d to prune, excluded names). UnsupportedError if the model has no
    Conv2d; InputError for unknown names in ``exclude`` or when nothing is left to prune."""
    convs = common.conv_layers(model)
    if not convs:
        raise UnsupportedError(f"{type(model).__name__} has no torch.nn.Conv2d layer: KEP prunes "
                               "the elements of Conv2d kernels", layer=type(model).__name__)
    excluded = default_exclude(model) if exclude is None else list(exclude)
    unknown = [n for n in excluded if n not in convs]
    if unknown:
        raise InputError(f"no Conv2d named {', '.join(map(repr, unknown))}; conv layers: "
                         f"{', '.join(convs)}", field="exclude")
    chosen = {n: m for n, m in convs.items() if n not in excluded}
    if not chosen:
        raise InputError(f"no prunable Conv2d left: the model's conv layers "
                         f"({', '.join(convs)}) are all excluded", field="exclude")
    return chosen, excluded


def layer_rates(model, prunable: dict, sparsity, over: str):
    """The rate(s) to ask of the pruned layers so that the target holds ``over`` the model."""
    if isinstance(sparsity, dict):
        return {n: check_sparsity(v, f"sparsity[{n}]") for n, v in sparsity.items()}
    p = check_sparsity(sparsity)
    if over == "pruned":
        return p
    convs = common.conv_layers(model)
    total = sum(m.weight.numel() for m in convs.values())
    pruned = sum(m.weight.numel() for m in prunable.values())
    dense = total - pruned
    allowed = (1 - p) * total - dense
    if allowed <= 0:
        raise InputError(f"a model conv sparsity of {p:.1%} is impossible: the excluded layers "
                         f"alone keep {dense} of {total} conv weights ({dense / total:.1%})",
                         field="sparsity")
    return min(1.0 - allowed / pruned, np.nextafter(1.0, 0.0))


def choose_masks(model, config: KEPConfig, prunable: dict | None = None) -> dict[str, LayerMask]:
    """The prior-knowledge masks of the prunable layers from the model's current weights."""
    if prunable is None:
        prunable, _ = prunable_layers(model, config.exclude)
    rates = layer_rates(model, prunable, config.sparsity, config.sparsity_over)
    weights = {n: m.weight.detach().cpu().numpy() for n, m in prunable.items()}
    return select_masks(weights, rates, scope=config.scope, n_patterns=config.patterns,
                        keep_per_pattern=config.keep_per_pattern, metric=config.metric,
                        keep_center=config.keep_center, global_target=config.global_target)


# ----------------------------------------------------------------------------- penalty

def penalty_pairs(model, masks: dict) -> list:
    """(weight, 1 - mask) tensor pairs for ``kep_penalty``; masks: name -> bool array or LayerMask."""
    torch = common._torch()
    layers = dict(model.named_modules())
    out = []
    for name, m in masks.items():
        w = layers[name].weight
        m = m.mask if isinstance(m, LayerMask) else np.asarray(m)
        out.append((w, torch.as_tensor(~m.astype(bool), dtype=w.dtype, device=w.device)))
    return out


def kep_penalty(pairs) -> "torch.Tensor":
    """sum_l ||W_l * (1 - M_l)||^2 over ``pairs`` of (weight, 1 - mask) tensors
    (``penalty_pairs(model, masks)``)."""
    return sum((w * inv).pow(2).sum() for w, inv in pairs)


def _outside_ratio(pairs) -> float:
    torch = common._torch()
    with torch.no_grad():
        out = sum(float((w * inv).pow(2).sum()) for w, inv in pairs)
        tot = sum(float(w.pow(2).sum()) for w, _ in pairs)
    return float(np.sqrt(out / tot)) if tot > 0 else 0.0


def penalty_phase(model, masks, loader, config: KEPConfig, test_loader=None, history=None,
                  bar=None) -> dict:
    """Train with CE + lambda(t) * ||W (1 - M)||^2; returns the schedule actually run."""
    torch = common._torch()
    pairs = penalty_pairs(model, masks)
    opt = common.make_optimizer(model.parameters(), config.optimizer, config.lr,
                                config.momentum, config.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    sched = config.penalty
    t = 0
    lam = sched.value(0)
    stopped_early = False
    for epoch in range(int(config.penalty_epochs)):
        model.train()
        total = n = 0
        for batch in loader:
            x, y = batch[0], batch[1]
            lam = sched.value(t)
            opt.zero_grad()
            ce = loss_fn(model(x), y)
            loss = ce + lam * kep_penalty(pairs) if lam > 0 else ce
            loss.backward()
            opt.step()
            t += 1
            total += float(ce.detach()) * len(y)
            n += len(y)
        ratio = _outside_ratio(pairs)
        entry = {"phase": "penalty", "epoch": epoch + 1, "steps": t, "lambda": lam,
                 "penalty": float(kep_penalty(pairs).detach()), "outside_norm_ratio": ratio,
                 "loss": total / max(n, 1)}
        if test_loader is not None:
            entry["accuracy"] = common.evaluate(model, test_loader)
        if history is not None:
            history.append(entry)
        if bar is not None:
            bar.advance()
            bar.note(f"λ={lam:.3g} outside={ratio:.2e}" +
                     (f" acc={entry['accuracy']:.2f}%" if "accuracy" in entry else ""))
        if config.penalty_tol and ratio < config.penalty_tol:
            stopped_early = True
            if bar is not None:
                bar.advance(int(config.penalty_epochs) - epoch - 1)
            break
    return {"start": sched.start, "step": sched.step, "cap": sched.cap,
            "interval_steps": int(sched.interval), "steps_run": t, "final_lambda": lam,
            "epochs_planned": int(config.penalty_epochs), "stopped_early": stopped_early,
            "tol": config.penalty_tol,
            "lambda_formula": "min(cap, start + step * floor(t / interval))"}


def hard_prune(model, masks: dict) -> None:
    """W <- W * M in place (exact zeros outside M)."""
    torch = common._torch()
    layers = dict(model.named_modules())
    with torch.no_grad():
        for name, m in masks.items():
            m = m.mask if isinstance(m, LayerMask) else np.asarray(m)
            w = layers[name].weight
            w.mul_(torch.as_tensor(m.astype(bool), dtype=w.dtype, device=w.device))


def finetune_masked(model, masks: dict, loader, config: KEPConfig, test_loader=None,
                    history=None, bar=None) -> None:
    """Fine-tune with M fixed: masked gradients, weights re-masked after every step."""
    torch = common._torch()
    plain = {n: (m.mask if isinstance(m, LayerMask) else np.asarray(m)) for n, m in masks.items()}
    guard = common.MaskGuard(model, plain)
    epochs = int(config.finetune_epochs)
    opt = common.make_optimizer(model.parameters(), config.optimizer, config.finetune_lr,
                                config.momentum, config.weight_decay)
    steps = max(1, epochs * len(loader))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    loss_fn = torch.nn.CrossEntropyLoss()
    try:
        for epoch in range(epochs):
            model.train()
            total = n = 0
            for batch in loader:
                x, y = batch[0], batch[1]
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
                guard.apply()
                sched.step()
                total += float(loss.detach()) * len(y)
                n += len(y)
            entry = {"phase": "finetune", "epoch": epoch + 1, "loss": total / max(n, 1)}
            if test_loader is not None:
                entry["accuracy"] = common.evaluate(model, test_loader)
            if history is not None:
                history.append(entry)
            if bar is not None:
                bar.advance()
                if "accuracy" in entry:
                    bar.note(f"acc={entry['accuracy']:.2f}%")
    finally:
        guard.remove()
        guard.apply()


# ----------------------------------------------------------------------------- the whole job

def conv_sparsity(model) -> dict:
    """Exact-zero fraction of each Conv2d weight and of all of them."""
    convs = common.conv_layers(model)
    per = {}
    zeros = total = 0
    for n, m in convs.items():
        w = m.weight.detach()
        z = int((w == 0).sum())
        per[n] = z / w.numel()
        zeros += z
        total += w.numel()
    return {"layers": per, "model": zeros / total if total else 0.0}


def kep_prune(model, loaders, sparsity=0.8, config: KEPConfig | None = None, **options):
    """KEP-prune a copy of ``model``: ``(pruned_model, report)``.

    ``loaders``: ``{"train": DataLoader, "test": DataLoader}`` or a (train, test) pair, batches
    ``(x, y)`` for classification. ``sparsity``: target rate (see ``KEPConfig.sparsity_over``)
    or a dict layer -> rate. ``options``: any ``KEPConfig`` field and ``lambda_start``,
    ``lambda_step``, ``lambda_cap``, ``lambda_interval``. The report is JSON-ready (see
    ``report_keys`` in the docs of ``kepsparse prune kep``). The input model is not modified.
    Reconstruction of doi:10.1016/j.neunet.2024.106708 (see the module doc).
    """
    torch = common._torch()
    config = make_config(config, sparsity=sparsity, **options)
    loaders = common.as_loaders(loaders)
    common.set_threads(config.threads)
    t0 = time.perf_counter()
    pruned = common.copy_model(model)
    prunable, excluded = prunable_layers(pruned, config.exclude)
    torch.manual_seed(config.seed)
    example = common.example_input(loaders["test"])
    before = flops.count(pruned, example)
    acc_dense = common.evaluate(pruned, loaders["test"])

    masks = choose_masks(pruned, config, prunable)
    history: list[dict] = [{"phase": "dense", "epoch": 0, "accuracy": acc_dense,
                            "lambda": 0.0, "outside_norm_ratio":
                            _outside_ratio(penalty_pairs(pruned, masks))}]
    bar = common.progress_bar(int(config.penalty_epochs), "KEP penalty  ", config.progress)
    try:
        schedule = penalty_phase(pruned, masks, loaders["train"], config, loaders["test"],
                                 history, bar)
    finally:
        bar.close()
    acc_penalty = history[-1].get("accuracy", acc_dense)
    hard_prune(pruned, masks)
    acc_hard = common.evaluate(pruned, loaders["test"])
    history.append({"phase": "hard_prune", "epoch": 0, "accuracy": acc_hard})
    bar = common.progress_bar(int(config.finetune_epochs), "KEP fine-tune", config.progress)
    try:
        finetune_masked(pruned, masks, loaders["train"], config, loaders["test"], history, bar)
    finally:
        bar.close()
    pruned.eval()
    acc_final = common.evaluate(pruned, loaders["test"])
    plain = {n: lm.mask for n, lm in masks.items()}
    after = flops.count(pruned, example, nonzero=True)  # exact zeros outside the masks
    sp = conv_sparsity(pruned)

    layers = {}
    for n, m in common.conv_layers(pruned).items():
        row = {"shape": list(m.weight.shape), "weights": m.weight.numel(),
               "sparsity": round(sp["layers"][n], 6), "pruned": n in masks,
               "flops_before": before["flops_per_layer"].get(n),
               "flops_after": after["flops_per_layer"].get(n)}
        if n in masks:
            row.update({f"mask_{k}" if k in ("sparsity", "kept", "weights") else k: v
                        for k, v in masks[n].to_json().items()})
        layers[n] = row
    pruned_total = sum(int(m.size) for m in plain.values())
    pruned_zero = sum(int(np.count_nonzero(~np.asarray(m, bool))) for m in plain.values())
    report = {
        "method": "kep",
        "reference": f"doi:{DOI}",
        "note": NOTE,
        "config": config.to_json(),
        "penalty_schedule": schedule,
        "excluded_layers": excluded,
        "layers": layers,
        "conv_sparsity": {"model": round(sp["model"], 6),
                          "pruned_layers": round(pruned_zero / pruned_total, 6)},
        "params": {"before": before["params"], "after": after["params"],
                   "reduction": round(1 - after["params"] / before["params"], 6)},
        "flops": {"before": before["flops"], "after": after["flops"],
                  "reduction": round(1 - after["flops"] / before["flops"], 6),
                  "convention": "MACs, conv + linear, bias adds included, one sample of "
                                f"shape {list(example.shape[1:])}; after: non-zero weights "
                                "(kepsparse.nets.flops)"},
        "accuracy": {"dense": acc_dense, "after_penalty": acc_penalty,
                     "after_hard_prune": acc_hard, "final": acc_final,
                     "drop": round(acc_dense - acc_final, 6)},
        "history": history,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    pruned.kep_masks = plain  # for save_checkpoint(..., prune_masks=True)
    return pruned, report


# ----------------------------------------------------------------------------- plot

def plot_report(report: dict, path) -> None:
    """Per-layer sparsity (bars, targets marked), accuracy per epoch over the phases, and
    lambda / outside-mask norm per epoch, into one PNG (matplotlib, Agg)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    names = list(report["layers"])
    sp = [100 * report["layers"][n]["sparsity"] for n in names]
    colors = ["tab:blue" if report["layers"][n]["pruned"] else "tab:gray" for n in names]
    ax = axes[0]
    ax.bar(range(len(names)), sp, color=colors)
    for i, n in enumerate(names):
        t = report["layers"][n].get("target_sparsity")
        if t is not None:
            ax.plot([i - 0.4, i + 0.4], [100 * t] * 2, color="tab:red", lw=1.5)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("sparsity (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"per-layer sparsity (model {100 * report['conv_sparsity']['model']:.1f}%)")

    hist = report["history"]
    xs, acc, phase = [], [], []
    for i, h in enumerate(hist):
        if "accuracy" in h:
            xs.append(i)
            acc.append(h["accuracy"])
            phase.append(h["phase"])
    ax = axes[1]
    ax.plot(xs, acc, marker="o", ms=3)
    hp = [i for i, h in enumerate(hist) if h["phase"] == "hard_prune"]
    for i in hp:
        ax.axvline(i, color="tab:red", ls="--", lw=1, label="hard prune")
    ax.axhline(report["accuracy"]["dense"], color="gray", lw=0.8, label="dense")
    ax.set_xlabel("epoch (penalty, then fine-tune)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"accuracy: {report['accuracy']['dense']:.2f} -> {report['accuracy']['final']:.2f}")
    ax.legend(fontsize=8)

    ax = axes[2]
    pen = [h for h in hist if h["phase"] in ("dense", "penalty")]
    ax.plot(range(len(pen)), [h["lambda"] for h in pen], color="tab:orange", marker="o", ms=3)
    ax.set_ylabel("λ (end of epoch)", color="tab:orange")
    ax.set_xlabel("penalty epoch")
    ax2 = ax.twinx()
    ratio = [max(h["outside_norm_ratio"], 1e-12) for h in pen]
    ax2.semilogy(range(len(pen)), ratio, color="tab:green", marker="s", ms=3)
    ax2.set_ylabel("||W(1-M)|| / ||W||", color="tab:green")
    s = report["penalty_schedule"]
    ax.set_title(f"penalty: λ={s['start']:g}+{s['step']:g}/{s['interval_steps']} steps, cap {s['cap']:g}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["DOI", "KEPConfig", "PenaltySchedule", "make_config", "kep_prune", "choose_masks",
           "prunable_layers", "default_exclude", "layer_rates", "kep_penalty", "penalty_pairs",
           "penalty_phase", "hard_prune", "finetune_masked", "conv_sparsity", "plot_report"]
