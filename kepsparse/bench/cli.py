"""``kepsparse bench``: time every registered kernel against dense torch and onnxruntime on
real layer shapes (see ``kepsparse bench --help`` and benchmarks/README.md)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError

QUICK = dict(networks=["resnet56_cifar"], layers=["layer2"], structures=["kep", "random"],
             sparsities=[0.9], batches=[1], threads=[1], budget_s=0.05, warmup_s=0.02)


def _csv(kind):
    def parse(text: str):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise ValueError("empty list")
        return [kind(t) for t in items]
    parse.__name__ = f"comma-separated {kind.__name__} list"
    return parse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="benchmark the sparse kernels against dense torch and onnxruntime",
        description="Time every registered kernel (and auto) on real layer shapes against dense "
                    "torch (NCHW, channels_last) and onnxruntime on the same weights. Every output "
                    "is verified against torch before it is timed.")
    p.add_argument("--networks", type=_csv(str), default=None,
                   help="built-in networks (default: all; see --list)")
    p.add_argument("--layers", type=_csv(str), default=None,
                   help="glob patterns on layer name or network/name, e.g. 'layer1,resnet18/layer4*'")
    p.add_argument("--shapes", action="append", default=[], metavar="FILE",
                   help="an extra shape file (JSON, the format of kepsparse/bench/shapes/)")
    p.add_argument("--sparsities", type=_csv(float), default=None, help="default 0.5,0.8,0.9,0.95")
    p.add_argument("--structures", type=_csv(str), default=None, help="kep,filter,random (default all)")
    p.add_argument("--batches", type=_csv(int), default=None, help="default 1,8")
    p.add_argument("--threads", type=_csv(int), default=None, help="default 1,2")
    p.add_argument("--kernels", type=_csv(str), default=None,
                   help="all (default: every available kernel but the slow reference, plus auto), "
                        "auto, none, a backend (cpp, numba, reference) or kernel names[:format]")
    p.add_argument("--competitors", type=_csv(str), default=None,
                   help="torch_nchw,torch_channels_last,onnxruntime (default all available), or none")
    p.add_argument("--budget", type=float, default=None, help="seconds of timed repeats per "
                   "contender and case (default 0.4)")
    p.add_argument("--warmup", type=float, default=None, help="seconds of warm-up (default 0.1)")
    p.add_argument("--min-repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved timing rounds per case (default 3): every contender is timed "
                        "in each round, so load bursts from other processes hit all alike")
    p.add_argument("--stat", choices=["median", "min"], default="median",
                   help="the time statistic behind speedups and GFLOP/s (default median; min is "
                        "the robust choice on a heavily shared machine). All are recorded.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="a small smoke-test preset (one CIFAR layer, 90%% kep+random, batch 1, 1 thread, "
                        "short budget); explicit options override it")
    p.add_argument("--json", metavar="FILE", help="write the full results as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write speedup vs sparsity (matplotlib)")
    p.add_argument("--markdown", metavar="FILE.md", help="write a markdown report")
    p.add_argument("--title", default="kepsparse layer benchmark results",
                   help="title of the markdown report")
    p.add_argument("--heading-level", type=int, default=1, choices=[1, 2, 3],
                   help="markdown heading level of the title (to append reports into one file)")
    p.add_argument("--table", choices=["full", "summary", "none"], default="full",
                   help="what to print (default full)")
    p.add_argument("--from-json", metavar="FILE", help="do not run: report a saved --json file")
    p.add_argument("--list", action="store_true", help="list networks, layers and kernels, then exit")
    p.set_defaults(func=_cmd_bench)


def _config(args):
    from .runner import BenchConfig
    cfg = BenchConfig()
    if args.quick:
        for k, v in QUICK.items():
            setattr(cfg, k, v)
    overrides = dict(networks=args.networks, layers=args.layers, sparsities=args.sparsities,
                     structures=args.structures, batches=args.batches, threads=args.threads,
                     kernels=args.kernels, competitors=args.competitors, budget_s=args.budget,
                     warmup_s=args.warmup)
    for k, v in overrides.items():
        if v is not None:
            setattr(cfg, k, v)
    if args.quick and args.layers is None and args.networks is not None:
        cfg.layers = None
    cfg.shape_files = list(args.shapes)
    cfg.min_repeats, cfg.seed, cfg.rounds, cfg.stat = args.min_repeats, args.seed, args.rounds, args.stat
    if cfg.budget_s <= 0 or cfg.warmup_s < 0 or cfg.min_repeats < 1 or cfg.rounds < 1:
        raise InputError("budget must be > 0, warm-up >= 0, min-repeats and rounds >= 1",
                         field="budget")
    return cfg


def _normalize(doc: dict) -> dict:
    """Check a saved result document has what the reports read (KeyError/TypeError if not)."""
    from .report import STAT_KEYS
    if doc.get("kind") != "kepsparse-bench":
        raise KeyError("kind")
    settings = doc["settings"]
    settings.setdefault("stat", "median")
    key = STAT_KEYS[settings["stat"]]
    for name in ("kernels", "auto", "competitors"):
        doc["contenders"][name]
    for case in doc["cases"]:
        for name in ("network", "layer", "batch", "threads", "structure", "sparsity",
                     "useful_flops", "dense_flops"):
            case[name]
        for r in case["results"]:
            r["name"], r["kind"], r["backend"], r["status"]
            if r["status"] == "ok":
                r.setdefault("t_s", r[key])
                float(r["time_s"]), float(r["min_s"])
    return doc


def _list(console) -> int:
    from ..kernels import registry
    from .cases import builtin_networks, load_networks
    for net, layers in load_networks(None).items():
        console.print(f"[bold]{net}[/bold] ({builtin_networks()[net]})")
        for ls in layers:
            console.print(f"  {ls.name:18s} {ls.describe():28s} x{ls.count}")
    console.print("[bold]kernels[/bold]")
    for k in registry.all_kernels(include_unavailable=True):
        why = k.unavailable_reason()
        console.print(f"  {k.name:28s} {k.backend:9s} {','.join(k.formats):20s} "
                      f"{'available' if why is None else 'unavailable: ' + why}")
    return 0


def _cmd_bench(args) -> int:
    from rich.console import Console
    from . import report
    console = Console()
    if not console.is_terminal:  # piped or redirected: wide enough for the tables
        console = Console(width=max(console.width, 170))
    if args.list:
        return _list(console)
    for opt in ("json", "plot", "markdown"):  # fail before a long run, not after it
        out = getattr(args, opt)
        if out is not None:
            parent = Path(out).resolve().parent
            if not parent.is_dir():
                raise InputError(f"folder {parent} does not exist", path=out, field=opt)
            if not os.access(parent, os.W_OK):
                raise InputError(f"folder {parent} is not writable", path=out, field=opt)
    if args.from_json:
        try:
            doc = _normalize(json.loads(Path(args.from_json).read_text()))
        except FileNotFoundError:
            raise InputError("file not found", path=args.from_json) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"not a kepsparse bench JSON file: {exc}", path=args.from_json) from None
        doc["summary"] = report.summarize(doc)
    else:
        doc = _run(args, console)
        if args.json:
            Path(args.json).write_text(json.dumps(doc, indent=1))
    if args.table != "none":
        report.rich_tables(doc, console, full=args.table == "full")
    if args.plot:
        report.plot(doc, args.plot)
        console.print(f"wrote {args.plot}")
    if args.markdown:
        plot_ref = None
        if args.plot:
            try:
                plot_ref = str(Path(args.plot).resolve().relative_to(Path(args.markdown).resolve().parent))
            except ValueError:
                plot_ref = str(Path(args.plot).resolve())
        Path(args.markdown).write_text(report.markdown(doc, plot_ref, args.title, args.heading_level))
        console.print(f"wrote {args.markdown}")
    if args.json and not args.from_json:
        console.print(f"wrote {args.json}")
    return 0


def _run(args, console) -> dict:
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from .runner import plan, run_bench
    cfg = _config(args)
    n_cases = len(plan(cfg))
    progress = Progress(TextColumn("[bold]bench[/bold]"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.description}"),
                        console=Console(stderr=True), transient=True)
    with progress:
        task = progress.add_task("", total=n_cases)

        def update(done, total, text):
            progress.update(task, completed=done, description=text)

        def save(doc):  # the results so far survive a crash or Ctrl-C of a long run
            tmp = Path(str(args.json) + ".tmp")
            tmp.write_text(json.dumps(doc, indent=1))
            tmp.replace(args.json)

        return run_bench(cfg, progress=update, checkpoint=save if args.json else None)
