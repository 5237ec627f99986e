"""``kepsparse prune kep``: KEP kernel-element pruning (reconstruction of
doi:10.1016/j.neunet.2024.106708 from its abstract; see ``kepsparse.prune.kep``)."""
from __future__ import annotations

from .cli import add_common_arguments, finish, prepare


def _parse_exclude(value: str | None):
    if value is None:
        return None
    if value.strip().lower() in ("", "none"):
        return ()
    return tuple(v.strip() for v in value.split(",") if v.strip())


def run(args) -> int:
    from .kep import kep_prune, plot_report
    from .masks import check_sparsity

    check_sparsity(args.sparsity)  # fail before any training
    model, loaders, how = prepare(args)
    pruned, report = kep_prune(
        model, loaders, args.sparsity, scope=args.scope, patterns=args.patterns,
        keep_per_pattern=args.keep, metric=args.metric, keep_center=args.keep_center,
        global_target=args.global_target, sparsity_over=args.sparsity_over,
        exclude=_parse_exclude(args.exclude), penalty_epochs=args.penalty_epochs,
        finetune_epochs=args.epochs, lr=args.lr, finetune_lr=args.finetune_lr,
        optimizer=args.optimizer, penalty_tol=args.penalty_tol, lambda_start=args.lambda_start,
        lambda_step=args.lambda_step, lambda_cap=args.lambda_cap,
        lambda_interval=args.lambda_interval, seed=args.seed, threads=args.threads,
        progress=not args.no_progress)
    report["source"] = {"model": args.model, "data": args.data, "weights": how}
    if not args.no_check:
        report.update(check_sparse_run(args, pruned, loaders))
    written = finish(args, pruned, report, masks=pruned.kep_masks, plot=plot_report)
    a, p, f = report["accuracy"], report["params"], report["flops"]
    print(f"KEP {args.scope} scope: conv sparsity {report['conv_sparsity']['model']:.1%} "
          f"(pruned layers {report['conv_sparsity']['pruned_layers']:.1%}); accuracy "
          f"{a['dense']:.2f}% -> {a['final']:.2f}%; params {p['before']:,} -> {p['after']:,}; "
          f"FLOPs {f['before']:,} -> {f['after']:,} (-{f['reduction']:.1%})")
    check = report.get("sparse_check")
    if isinstance(check, dict) and "layers" in check:
        ratio = check["pattern_index_value_ratio"]
        formats = ", ".join(f"{n}={r['format']}" for n, r in check["layers"].items())
        line = (f"kepsparse convert: {formats}; max |sparse - torch| per conv "
                f"{check['max_abs_err']:.2e}")
        if ratio is not None:
            line += f"; pattern index/value bytes {ratio:.1%}"
        print(line)
    run_ = report.get("sparse_run")
    if isinstance(run_, dict) and "images" in run_:
        print(f"sparse run (kepsparse convs): {run_['same_class']}/{run_['images']} test images "
              f"predict torch's class, accuracy {run_['sparse_accuracy']:.2f}%")
    print("wrote " + ", ".join(written))
    return 0


def check_sparse_run(args, pruned, loaders) -> dict:
    """Convert the pruned model and run its convs with kepsparse (per layer, on a few test
    samples); for the built-in digits CNN also the whole network over the test set."""
    from ..errors import KepError
    from . import common

    out = {}
    backend = getattr(args, "check_backend", "reference")
    try:
        x = next(iter(loaders["test"]))[0][:16]
        check = common.sparse_check(pruned, x, backend=backend)
        sparse = check.pop("sparse_model")
        out["sparse_check"] = check
        if args.model == "digits":
            from ..nets.digits import sparse_agreement
            out["sparse_run"] = sparse_agreement(pruned, loaders["test"], backend=backend,
                                                 sparse=sparse)
    except KepError as exc:
        out["sparse_check"] = {"skipped": str(exc)}
    return out


def register(methods) -> None:
    p = methods.add_parser("kep", help="KEP: kernel-element pruning with a prior-knowledge mask "
                           "and a growing penalty (doi:10.1016/j.neunet.2024.106708, reconstructed)")
    p.add_argument("--sparsity", type=float, default=0.8,
                   help="target fraction of conv weights removed (default 0.8)")
    g = p.add_argument_group("mask (prior knowledge)")
    g.add_argument("--scope", choices=("plane", "filter", "layer"), default="plane",
                   help="elements pruned together: per kernel plane with a pattern library "
                        "(default), per filter (stripes), per layer")
    g.add_argument("--patterns", type=int, default=8, help="pattern library size P per layer "
                   "(plane scope; default 8; <= 3 gives 2-bit plane ids)")
    g.add_argument("--keep", type=int, default=None,
                   help="positions kept per pattern k (plane scope; default 4/9 of the kernel "
                        "or what the rate needs)")
    g.add_argument("--metric", choices=("l1", "l2"), default="l2", help="unit importance")
    g.add_argument("--keep-center", action="store_true", help="always keep the kernel centre")
    g.add_argument("--global", dest="global_target", action="store_true",
                   help="one global budget instead of the same rate per layer")
    g.add_argument("--sparsity-over", choices=("model", "pruned"), default="model",
                   help="the target counts all conv weights (model, default) or only the "
                        "pruned layers")
    g.add_argument("--exclude", default=None,
                   help="comma-separated conv layers not to prune (default: the first conv and "
                        "a conv classifier; 'none' prunes every conv)")
    g = p.add_argument_group("penalty  λ(t) = min(cap, start + step·floor(t/interval))")
    g.add_argument("--penalty-epochs", type=int, default=8, help="default 8")
    g.add_argument("--lambda-start", type=float, default=0.0)
    g.add_argument("--lambda-step", type=float, default=0.05)
    g.add_argument("--lambda-cap", type=float, default=1.0)
    g.add_argument("--lambda-interval", type=int, default=5, help="optimizer steps per increment")
    g.add_argument("--penalty-tol", type=float, default=1e-3,
                   help="end the penalty phase once ||W(1-M)||/||W|| is below this (0: never)")
    g = p.add_argument_group("optimizer")
    g.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    g.add_argument("--lr", type=float, default=0.01, help="penalty phase (default 0.01)")
    g.add_argument("--finetune-lr", type=float, default=0.01,
                   help="fine-tuning, cosine-annealed (default 0.01)")
    p.add_argument("--no-check", action="store_true",
                   help="skip converting the result and running it with kepsparse's kernels")
    p.add_argument("--check-backend", default="reference",
                   help="kepsparse backend for that check: reference (default), numba, cpp, auto")
    add_common_arguments(p, default_epochs=10)
    p.set_defaults(func=run)
