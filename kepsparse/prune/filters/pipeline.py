"""Filter pruning end to end: criterion -> per-layer budget -> physical removal (Torch-Pruning)
-> equivalence check -> fine-tuning (kd | mutual | plain) -> optional KEP element pruning.

    pruned, report = filter_prune(model, {"train": tr, "test": te}, "similarity",
                                  flops_reduction=0.5, finetune="kd", epochs=10)
    pruned, report = filter_prune(model, loaders, "fcs", flops_reduction=0.5,
                                  finetune="mutual", kep_sparsity=0.6)   # + KEP afterwards
    sparse = kepsparse.convert(pruned)                                   # runs sparse

The report is JSON-ready: params/FLOPs before and after (``kepsparse.nets.flops.count``, the
literature's convention: MACs of conv + linear, bias adds included), accuracy dense / right
after removal / after fine-tuning (/ after KEP), per-layer channels kept, the criterion's
per-layer evidence, the fine-tuning history.
"""
from __future__ import annotations

import copy
import time

import numpy as np

from ...errors import InputError
from .. import common
from ..finetune import SCHEMES, FinetuneConfig, finetune
from . import graph as G
from .criteria import CRITERIA, PAPER_FINETUNE, Context, make_criterion

NOTE = ("formulation reconstructed from the paper's abstract and the prior work it names "
        "(not the authors' code); open choices are parameters")


def count(model, example, nonzero: bool = False) -> dict:
    """Params and FLOPs with the shared counter (``kepsparse.nets.flops``)."""
    from ...nets.flops import count as _count
    c = _count(model, tuple(example.shape[1:]), nonzero=nonzero)
    return {"params": int(c["params"]), "flops": int(c["flops"])}


def group_order(criterion, group) -> np.ndarray:
    """Removal order of a group: the root's order, or (coupled residual group) channels sorted by
    their mean position in the members' orders."""
    if len(group.out_convs) == 1:
        return np.asarray(criterion.order(group.root), dtype=np.int64)
    pos = np.zeros(group.channels)
    for c in group.out_convs:
        o = np.asarray(criterion.order(c))
        p = np.empty(len(o))
        p[o] = np.arange(len(o))
        pos += p
    return np.argsort(pos, kind="stable")


def filter_prune(model, loaders, method: str = "l1", *, flops_reduction: float | None = 0.5,
                 ratio=None, allocation: str | None = None, max_rate: float = 0.9,
                 residual: str = "keep", exclude=(), finetune_scheme: str = "paper",
                 finetune_options: dict | None = None, kep_sparsity=None,
                 kep_options: dict | None = None, verify: str = "masked", calib_loader=None,
                 seed: int = 0, threads: int | None = None, progress: bool = False,
                 **method_options):
    """Prune output filters of a copy of ``model`` with ``method`` (one of ``CRITERIA``):
    ``(pruned_model, report)``; the input model is not modified.

    ``flops_reduction``: global target (0.5 = half the FLOPs), or ``ratio``: a rate per layer
    (float or ``{conv: rate}``). ``allocation``: ``"uniform"`` or ``"dispersion"`` (Kernel
    Dispersion; the default for ``similarity``). ``max_rate``: per-layer cap. ``residual``:
    ``"keep"``/``"prune"`` (see ``kepsparse.prune.filters.graph``). ``finetune_scheme``: kd,
    mutual, plain, none, or paper (the method's own: similarity->kd, fcs->mutual, else plain);
    ``finetune_options``: ``FinetuneConfig`` fields. ``kep_sparsity``: then KEP-prune the
    remaining kernels (``kep_options``: ``kep_prune`` options). ``verify``: ``"masked"`` (the
    pruned net must equal the masked net), ``"shape"`` or ``"none"``. ``method_options``: the
    criterion's own knobs (see its ``Options``).
    """
    torch = common._torch()
    if method not in CRITERIA:
        raise InputError(f"unknown filter criterion {method!r}; choose from "
                         f"{', '.join(CRITERIA)}", field="method")
    scheme = PAPER_FINETUNE[method] if finetune_scheme == "paper" else finetune_scheme
    if scheme not in SCHEMES:
        raise InputError(f"unknown fine-tuning scheme {finetune_scheme!r}; choose from "
                         f"paper, {', '.join(SCHEMES)}", field="finetune")
    if verify not in ("masked", "shape", "none"):
        raise InputError(f"unknown verify mode {verify!r}; choose masked, shape or none",
                         field="verify")
    ft_cfg = FinetuneConfig(**{"seed": seed, **(finetune_options or {})}).check()
    criterion = make_criterion(method, **method_options)
    loaders = common.as_loaders(loaders)
    common.set_threads(threads)
    torch.manual_seed(seed)
    t0 = time.perf_counter()

    work = copy.deepcopy(model).eval()
    example = common.example_input(loaders["test"])
    before = count(work, example)
    acc_dense = common.evaluate(work, loaders["test"])

    DG = G.build_graph(work, example)
    groups = G.find_groups(work, DG, residual=residual, exclude=exclude)
    if allocation is None:
        allocation = "dispersion" if method == "similarity" else "uniform"
    if allocation not in ("uniform", "dispersion"):
        raise InputError(f"unknown allocation {allocation!r}; choose uniform or dispersion",
                         field="allocation")
    # validate the budget before any (possibly slow) criterion work
    costs = G.layer_costs(work, example)
    G.check_traced(work, DG, costs)
    if ratio is not None:
        G.allocate(groups, costs, ratio=ratio)
    elif allocation == "uniform":
        G.allocate(groups, costs, flops_reduction=flops_reduction, max_rate=max_rate)

    ctx = Context(work, DG, groups, calib_loader or loaders["train"], seed=seed, progress=progress)
    bar = common.progress_bar(2, f"{method}: rank filters", progress)
    try:
        criterion.prepare(ctx)
        bar.advance()
        orders = {g.root: group_order(criterion, g) for g in groups if g.prunable}
        bar.advance()
    finally:
        bar.close()
    weights = None
    dispersion = None
    if allocation == "dispersion":
        if criterion.layer_weights is None:  # a criterion that does not weight layers itself
            criterion.use_kernel_dispersion()
        weights, dispersion = criterion.layer_weights, criterion.dispersion
    counts = G.allocate(groups, costs, flops_reduction=flops_reduction, ratio=ratio,
                        weights=weights, max_rate=max_rate)
    removal = {root: sorted(int(i) for i in orders[root][:n]) for root, n in counts.items() if n}

    reference = copy.deepcopy(work)
    plan = G.remove_channels(work, example, removal, DG)
    del DG, ctx
    diff = None
    if verify == "masked":
        diff = G.verify_equivalence(reference, work, plan, example)
    elif verify == "shape":
        with torch.no_grad():
            a, b = reference(example), work(example)
        if a.shape != b.shape:
            raise InputError(f"pruning changed the output shape {tuple(a.shape)} -> "
                             f"{tuple(b.shape)}", field="model")
    del reference
    pruned_counts = count(work, example)
    acc_pruned = common.evaluate(work, loaders["test"])

    history = finetune(work, loaders, scheme, teacher=model, config=ft_cfg, progress=progress)
    acc_final = common.evaluate(work, loaders["test"])

    kep_report = None
    masks = None
    if kep_sparsity is not None:
        from ..kep import kep_prune
        opts = {"seed": seed, "threads": threads, "progress": progress, **(kep_options or {})}
        work, kep_report = kep_prune(work, loaders, sparsity=kep_sparsity, **opts)
        masks = getattr(work, "kep_masks", None)
    after = count(work, example)
    after_nz = count(work, example, nonzero=True) if kep_sparsity is not None else None
    acc_end = common.evaluate(work, loaders["test"])

    convs_after = G.channel_counts(work)
    layers = {}
    root_of = {c: g.root for g in groups for c in g.out_convs}
    by_root = {g.root: g for g in groups}
    for name, m in common.conv_layers(model).items():
        root = root_of.get(name, name)
        g = by_root.get(root)
        row = {"channels_before": int(m.out_channels),
               "channels_after": int(convs_after.get(name, m.out_channels)),
               "group": root, "pruned": bool(g is not None and g.prunable),
               "removed": removal.get(root, []) if g is not None and g.prunable else []}
        if g is not None and not g.prunable:
            row["kept_because"] = g.reason
        if dispersion and root in dispersion:
            row["kernel_dispersion"] = round(dispersion[root], 6)
        if g is not None and g.prunable:
            row.update(criterion.details(name))
        layers[name] = row

    def red(a, b):
        return round(1 - b / a, 6) if a else 0.0

    report = {
        "method": method,
        "reference": (f"doi:{criterion.doi}" if criterion.doi else criterion.reference),
        "note": NOTE,
        "criterion_options": criterion.options_json(),
        "config": {"flops_reduction_target": flops_reduction, "ratio": ratio,
                   "allocation": allocation, "max_rate": max_rate, "residual": residual,
                   "exclude": list(exclude or ()), "finetune": scheme,
                   "finetune_options": ft_cfg.__dict__, "kep_sparsity": kep_sparsity,
                   "verify": verify, "seed": seed},
        "params": {"before": before["params"], "after_filter_pruning": pruned_counts["params"],
                   "after": after["params"], "reduction": red(before["params"], after["params"])},
        "flops": {"before": before["flops"], "after_filter_pruning": pruned_counts["flops"],
                  "after": after["flops"], "reduction": red(before["flops"], after["flops"]),
                  "convention": "MACs of conv + linear, bias adds included (kepsparse.nets.flops)"
                                f", one sample of shape {list(example.shape[1:])}"},
        "accuracy": {"dense": acc_dense, "after_removal": acc_pruned,
                     "after_finetune": acc_final, "final": acc_end,
                     "drop": round(acc_dense - acc_end, 6)},
        "masked_vs_pruned_max_abs_diff": diff,
        "layers": layers,
        "groups": [g.to_json() for g in groups],
        "finetune_history": history,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if kep_report is not None:
        report["kep"] = {k: kep_report[k] for k in ("conv_sparsity", "accuracy", "config")
                         if k in kep_report}
        report["params"]["after_nonzero"] = after_nz["params"]
        report["flops"]["after_nonzero"] = after_nz["flops"]
        report["flops"]["reduction_nonzero"] = red(before["flops"], after_nz["flops"])
        work.kep_masks = masks
    work.filter_report = {"removal": removal}
    return work, report


def criterion_importance(criterion, ctx: Context):
    """A Torch-Pruning ``Importance`` backed by a prepared criterion, for users of
    ``tp.pruner.MetaPruner``: the score of a channel is its position in the criterion's removal
    order of the group's root layer (higher = removed later = more important)."""
    tp = G._tp()
    torch = common._torch()

    class CriterionImportance(tp.importance.Importance):
        def __call__(self, group):
            dep, idxs = group[0]
            name = ctx.names[id(dep.target.module)]
            order = np.asarray(criterion.order(name))
            score = np.empty(len(order))
            score[order] = np.arange(len(order))
            return torch.as_tensor(score[list(idxs)], dtype=torch.float32)

    return CriterionImportance()
