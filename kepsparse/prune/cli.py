"""``kepsparse prune METHOD ...``: the pruning command; each method plugs in from its own module.

Methods come from two places: any module of this package whose name ends in ``_cli``
(``kep_cli``) defining ``register(methods)``, and the registrars listed in ``REGISTRARS``
(``kepsparse.prune.filters.register_filter_methods`` adds similarity, lfrns, fpar, fcs, l1).
``methods`` is the ``prune`` command's sub-parser collection; a method adds one parser, calls
``add_common_arguments(parser)`` for the shared options (model, checkpoint, data, output,
report, plot, epochs, seed, ...) and sets ``func(args) -> exit code``. ``prepare(args)``
gives the method its model (checkpoint loaded, or trained first) and loaders; ``finish(...)``
writes the checkpoint, report and plot. Nothing here imports torch until a command runs.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..errors import InputError

#: (module, function) pairs that add several methods at once; a missing module is skipped.
REGISTRARS = (("kepsparse.prune.filters", "register_filter_methods"),)

#: Method modules listed first keep this order in ``kepsparse prune --help``; others follow.
PREFERRED_ORDER = ("kep_cli", "similarity_cli", "lfrns_cli", "fpar_cli", "fcs_cli", "l1_cli")


def method_modules() -> list[str]:
    from . import __path__ as pkg_path
    names = [i.name for i in pkgutil.iter_modules(pkg_path) if i.name.endswith("_cli")]
    names.sort(key=lambda n: (PREFERRED_ORDER.index(n) if n in PREFERRED_ORDER else len(PREFERRED_ORDER), n))
    return [f"{__package__}.{n}" for n in names]


def register(subparsers) -> None:
    p = subparsers.add_parser("prune", help="prune a torch model (KEP, filter methods); writes a "
                              "checkpoint ready for `kepsparse convert` and a JSON report")
    methods = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    for name in method_modules():
        importlib.import_module(name).register(methods)
    for module_name, function in REGISTRARS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # that family of methods is not part of this build
            raise
        getattr(module, function)(methods)


def add_common_arguments(p, default_epochs: int = 10) -> None:
    """Options every pruning method shares."""
    g = p.add_argument_group("model and data")
    g.add_argument("--model", required=True,
                   help="a built-in network name (e.g. digits) or path/to/file.py:factory")
    g.add_argument("--checkpoint", default=None,
                   help="trained weights (.pt state_dict; torch.nn.utils.prune masks accepted). "
                        "Omitted: train the model first (seeded) for --train-epochs")
    g.add_argument("--data", required=True,
                   help="a built-in dataset name (digits) or path/to/file.py:loader returning "
                        "{'train': DataLoader, 'test': DataLoader} or (train, test)")
    g.add_argument("--batch-size", type=int, default=64, help="for built-in datasets (default 64)")
    g.add_argument("--train-epochs", type=int, default=30,
                   help="epochs to train first when --checkpoint is omitted (default 30)")
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", required=True, help="pruned checkpoint (.pt state_dict)")
    g.add_argument("--report", default=None, help="JSON report (default: OUTPUT with .json)")
    g.add_argument("--plot", default=None, help="PNG plot of sparsity and training curves")
    g.add_argument("--prune-masks", action="store_true",
                   help="save pruned layers torch.nn.utils.prune-style (weight_orig/weight_mask)")
    g = p.add_argument_group("run")
    g.add_argument("--epochs", type=int, default=default_epochs,
                   help=f"fine-tuning epochs after pruning (default {default_epochs})")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def prepare(args):
    """(model, loaders, how) for a method: the model with its checkpoint loaded - or trained
    first when no checkpoint was given - and the loaders."""
    from . import common

    common.set_threads(args.threads)
    if args.batch_size < 1:
        raise InputError(f"must be >= 1, got {args.batch_size}", field="batch_size")
    model = common.load_model(args.model, seed=args.seed)
    loaders = common.load_data(args.data, seed=args.seed, batch_size=args.batch_size)
    if args.checkpoint is not None:
        common.load_checkpoint(model, args.checkpoint)
        how = f"checkpoint {args.checkpoint}"
    else:
        if args.train_epochs < 1:
            raise InputError("no --checkpoint given and --train-epochs < 1: nothing to prune "
                             "from", field="checkpoint")
        common.train(model, loaders["train"], args.train_epochs, seed=args.seed,
                     progress=not args.no_progress, description="train (no checkpoint)")
        how = f"trained {args.train_epochs} epochs (seed {args.seed})"
    return model, loaders, how


def finish(args, model, report: dict, masks: dict | None = None, plot=None) -> list[str]:
    """Write the checkpoint, the report and (with --plot and a ``plot(report, path)``) the
    figure; returns the paths written."""
    from pathlib import Path

    from . import common

    out = Path(args.output)
    common.save_checkpoint(model, out, masks=masks, prune_masks=args.prune_masks)
    written = [str(out)]
    report_path = Path(args.report) if args.report else out.with_suffix(".json")
    common.write_json(report, report_path)
    written.append(str(report_path))
    if args.plot:
        if plot is None:
            raise InputError("this method has no plot", field="plot")
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(report, args.plot)
        written.append(str(args.plot))
    return written
