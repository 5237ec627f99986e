"""``kepsparse prune similarity|lfrns|fpar|fcs|l1``: filter pruning from the command line.

    kepsparse prune similarity --model digits --data digits --flops-reduction 0.5 \
        --finetune kd -o out/sim.pt            # + out/sim.json (report)
    kepsparse prune fcs --model digits --data digits --kep-sparsity 0.6 -o out/fcs_kep.pt

``register_filter_methods(methods)`` adds the five sub-commands to the ``prune`` command's
sub-parser collection; the shared options (model, checkpoint, data, output, report, plot,
epochs, seed, threads, progress) come from ``kepsparse.prune.cli.add_common_arguments``. Each
criterion's knobs become options automatically (``--clusters``, ``--beta``, ...).
"""
from __future__ import annotations

import argparse
import dataclasses

from ...errors import InputError
from .criteria import CRITERIA, PAPER_FINETUNE

HELP = {
    "similarity": "similarity-based filter pruning: kernel clustering, importance + redundancy "
                  "inside clusters, Kernel-Dispersion layer rates (doi:10.1016/j.ins.2024.121418"
                  ", reconstructed)",
    "lfrns": "LFRNS: feature-map clustering + learned FCR gates restoring channels "
             "(doi:10.1016/j.aej.2024.12.118, reconstructed)",
    "fpar": "FPAR: channel-attention means + feature-map rank (doi:10.1007/s13042-023-02076-1, "
            "reconstructed)",
    "fcs": "FCS: L1-norm K-Means bins + cosine similarity inside bins, mutual-learning "
           "fine-tuning (doi:10.1007/s10489-022-03403-9, reconstructed)",
    "l1": "L1-norm filter pruning baseline (Li et al., ICLR 2017)",
}


def _ratio(value: str):
    """``0.3`` or ``conv1=0.2,conv2=0.5``."""
    if "=" not in value:
        try:
            return float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    out = {}
    for part in value.split(","):
        k, _, v = part.partition("=")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"layer {k.strip()!r}: not a number: {v!r}") from None
    return out


def _option_type(default, annotation):
    if isinstance(default, bool):
        return lambda s: s.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int
    if isinstance(default, float) or "float" in str(annotation):
        return float
    return str


def _add_criterion_options(p, name: str) -> list[str]:
    g = p.add_argument_group(f"{name} criterion")
    names = []
    for f in dataclasses.fields(CRITERIA[name].Options):
        flag = "--" + f.name.replace("_", "-")
        g.add_argument(flag, dest=f"opt_{f.name}", type=_option_type(f.default, f.type),
                       default=f.default, help=f"default {f.default}")
        names.append(f.name)
    return names


def run(args) -> int:
    from ..cli import finish, prepare
    from .pipeline import filter_prune
    from .report import plot_report

    if args.ratio is None and not 0 < args.flops_reduction < 1:
        raise InputError(f"must be in (0, 1), got {args.flops_reduction}", field="flops_reduction")
    rates = args.ratio if isinstance(args.ratio, dict) else {None: args.ratio}
    for layer, r in rates.items():  # fail before any training
        if r is not None and not 0 <= r < 1:
            raise InputError(f"ratio {r} must be in [0, 1) (1 would remove every filter)",
                             layer=layer, field="ratio")
    model, loaders, how = prepare(args)
    options = {n: getattr(args, f"opt_{n}") for n in args.criterion_options}
    ft = {"lr": args.lr, "optimizer": args.optimizer, "alpha": args.alpha,
          "t_start": args.t_start, "t_end": args.t_end, "t_schedule": args.t_schedule,
          "peer": args.peer, "mutual_weight": args.mutual_weight, "epochs": args.epochs,
          "weight_decay": args.weight_decay}
    kep = None
    if args.kep_sparsity is not None:
        kep = {"penalty_epochs": args.kep_penalty_epochs, "finetune_epochs": args.kep_epochs}
    exclude = tuple(v.strip() for v in (args.exclude or "").split(",") if v.strip())
    pruned, report = filter_prune(
        model, loaders, args.method, flops_reduction=None if args.ratio is not None
        else args.flops_reduction, ratio=args.ratio, allocation=args.allocation,
        max_rate=args.max_rate, residual=args.residual, exclude=exclude,
        finetune_scheme=args.finetune, finetune_options=ft, kep_sparsity=args.kep_sparsity,
        kep_options=kep, verify=args.verify, seed=args.seed, threads=args.threads,
        progress=not args.no_progress, **options)
    report["source"] = {"model": args.model, "data": args.data, "weights": how}
    if args.kep_sparsity is not None and not args.no_check:
        try:
            from ..kep_cli import check_sparse_run
            report.update(check_sparse_run(args, pruned, loaders))
        except ImportError:  # the KEP CLI module moved: skip the check, say so
            report["sparse_check"] = {"skipped": "kepsparse.prune.kep_cli.check_sparse_run "
                                                 "not available"}
    written = finish(args, pruned, report, masks=getattr(pruned, "kep_masks", None),
                     plot=plot_report)
    a, p, f = report["accuracy"], report["params"], report["flops"]
    kept = ", ".join(f"{n} {r['channels_after']}/{r['channels_before']}"
                     for n, r in report["layers"].items() if r["pruned"])
    print(f"{args.method} + {report['config']['finetune']} fine-tuning: accuracy "
          f"{a['dense']:.2f}% -> {a['after_removal']:.2f}% (removed) -> {a['final']:.2f}%; "
          f"params {p['before']:,} -> {p['after']:,} (-{p['reduction']:.1%}); FLOPs "
          f"{f['before']:,} -> {f['after']:,} (-{f['reduction']:.1%})")
    print(f"channels kept: {kept}")
    if "kep" in report:
        print(f"then KEP: conv sparsity {report['kep']['conv_sparsity']['model']:.1%}; non-zero "
              f"FLOPs {f['after_nonzero']:,} (-{f['reduction_nonzero']:.1%})")
    check = report.get("sparse_run")
    if isinstance(check, dict) and "images" in check:
        print(f"sparse run (kepsparse convs): {check['same_class']}/{check['images']} test images "
              f"predict torch's class")
    print("wrote " + ", ".join(written))
    return 0


def register_filter_methods(methods) -> None:
    """Add the five filter-pruning sub-commands to ``kepsparse prune`` (``methods``: the
    ``prune`` command's sub-parser collection)."""
    from ..cli import add_common_arguments

    for name in CRITERIA:
        p = methods.add_parser(name, help=HELP[name], description=HELP[name] + ". " +
                               "Formulation reconstructed from the paper's abstract.")
        g = p.add_argument_group("budget")
        g.add_argument("--flops-reduction", type=float, default=0.5,
                       help="global FLOPs reduction target (default 0.5)")
        g.add_argument("--ratio", type=_ratio, default=None,
                       help="instead of a FLOPs target: a filter rate for every prunable layer, "
                            "or conv1=0.2,conv2=0.5")
        g.add_argument("--allocation", choices=("uniform", "dispersion"), default=None,
                       help="per-layer rates: uniform, or by Kernel Dispersion (default: "
                            "dispersion for similarity, uniform otherwise)")
        g.add_argument("--max-rate", type=float, default=0.9, help="per-layer cap (default 0.9)")
        g.add_argument("--residual", choices=("keep", "prune"), default="keep",
                       help="channels tied by residual adds: keep (default; required for "
                            "zero-pad shortcuts) or prune")
        g.add_argument("--exclude", default=None, help="comma-separated convs not to prune")
        g.add_argument("--verify", choices=("masked", "shape", "none"), default="masked",
                       help="check the pruned net equals the masked net (default)")
        _names = _add_criterion_options(p, name)
        g = p.add_argument_group("fine-tuning")
        g.add_argument("--finetune", choices=("paper", "kd", "mutual", "plain", "none"),
                       default="paper", help=f"scheme (default paper: {PAPER_FINETUNE[name]} "
                       "for this method)")
        g.add_argument("--lr", type=float, default=1e-3, help="default 1e-3 (cosine decay)")
        g.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
        g.add_argument("--weight-decay", type=float, default=0.0)
        g.add_argument("--alpha", type=float, default=0.5, help="kd: distillation weight")
        g.add_argument("--t-start", type=float, default=8.0, help="kd: start temperature")
        g.add_argument("--t-end", type=float, default=2.0, help="kd: end temperature")
        g.add_argument("--t-schedule", choices=("cosine", "linear", "step", "constant"),
                       default="cosine")
        g.add_argument("--peer", choices=("dense", "pruned"), default="dense",
                       help="mutual: the peer network")
        g.add_argument("--mutual-weight", type=float, default=1.0)
        g = p.add_argument_group("then KEP (element pruning of the remaining kernels)")
        g.add_argument("--kep-sparsity", type=float, default=None,
                       help="KEP-prune after filter pruning to this conv sparsity")
        g.add_argument("--kep-penalty-epochs", type=int, default=4)
        g.add_argument("--kep-epochs", type=int, default=4, help="KEP fine-tuning epochs")
        g.add_argument("--no-check", action="store_true",
                       help="skip converting the result and running it with kepsparse's kernels")
        add_common_arguments(p, default_epochs=10)
        p.set_defaults(func=run, criterion_options=_names)
