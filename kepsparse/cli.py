"""kepsparse: convert pruned CNNs to sparse formats, run them fast on the CPU, export them to FPGAs.

Core commands live here (convert, inspect, demo). Subsystems add their own commands from
their own modules: each module in ``PLUGIN_MODULES`` that exists defines
``register(subparsers)`` and sets ``func`` on its parsers. Errors of the package's own
hierarchy print one line (``kepsparse: error: ...``) and exit 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

from .errors import KepError

PLUGIN_MODULES = (
    "kepsparse.bench.cli",      # kepsparse bench
    "kepsparse.runtime.cli",    # kepsparse run / tune
    "kepsparse.prune.cli",      # kepsparse prune ...
    "kepsparse.fpga.cli",       # kepsparse hls ...
)


def _cmd_convert(args) -> int:
    from . import convert, save
    model = convert(args.input, format=args.format, min_sparsity=args.min_sparsity,
                    max_patterns=args.max_patterns)
    save(model, args.output)  # atomic: a failure above or here leaves no partial output
    summary = model.summary()
    t = summary["totals"]
    graph = f" and a graph of {summary['graph']['nodes']} nodes" if "graph" in summary else ""
    print(f"wrote {args.output}: {t['layers']} conv layers{graph}, {t['nnz']:,} of "
          f"{t['weights']:,} weights kept ({t['sparsity']:.1%} sparse), "
          f"{t['value_bytes'] + t['index_bytes']:,} bytes vs {t['dense_bytes']:,} dense")
    return 0


def _cmd_inspect(args) -> int:
    from . import load
    summary = load(args.file).summary()
    if args.json:
        print(json.dumps({"file": str(args.file), **summary}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table
    table = Table(title=str(args.file))
    for col in ("layer", "shape", "format", "nnz", "sparsity", "value B", "index B", "index/value"):
        table.add_column(col, justify="left" if col in ("layer", "format") else "right")
    for r in summary["layers"]:
        ratio = r["index_bytes"] / r["value_bytes"] if r["value_bytes"] else 0.0
        table.add_row(r["name"], "x".join(map(str, r["shape"])), r["format"], f"{r['nnz']:,}",
                      f"{r['sparsity']:.1%}", f"{r['value_bytes']:,}", f"{r['index_bytes']:,}",
                      f"{ratio:.1%}")
    t = summary["totals"]
    table.add_section()
    table.add_row("total", f"{t['weights']:,} w", "", f"{t['nnz']:,}", f"{t['sparsity']:.1%}",
                  f"{t['value_bytes']:,}", f"{t['index_bytes']:,}",
                  f"{t['index_bytes'] / t['value_bytes']:.1%}" if t["value_bytes"] else "-")
    Console().print(table)
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo
    return run_demo(workdir=args.workdir, sparsity=args.sparsity, seed=args.seed,
                    fpga=not args.skip_fpga)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .formats import DEFAULT_MIN_SPARSITY, FORMATS
    parser = argparse.ArgumentParser(prog="kepsparse", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"kepsparse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("convert", help="convert a pruned model (.pt/.pth/.safetensors/.onnx) to .kep")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True, help="the .kep file to write")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                   help="sparse format for every layer; auto picks per layer (default)")
    p.add_argument("--min-sparsity", type=float, default=DEFAULT_MIN_SPARSITY,
                   help=f"auto keeps layers less sparse than this dense (default {DEFAULT_MIN_SPARSITY})")
    p.add_argument("--max-patterns", type=int, default=None,
                   help="largest pattern library per layer for the pattern format")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("inspect", help="per-layer formats, sparsity and bytes of a .kep file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("demo", help="the end-to-end demo: train, KEP-prune, convert, run sparse, "
                                           "export one layer to HLS/RTL")
    p.add_argument("--workdir", default=None, help="keep the demo's files here (default: a temp dir)")
    p.add_argument("--sparsity", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-fpga", action="store_true", help="leave out the HLS/RTL simulation step")
    p.set_defaults(func=_cmd_demo)

    for name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that subsystem is not part of this build
            raise
        module.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KepError as exc:
        print(f"kepsparse: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kepsparse: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
