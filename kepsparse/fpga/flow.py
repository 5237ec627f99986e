"""``run_layer_flow``: generate + C simulation + RTL simulation of one layer (for the demo)."""
from __future__ import annotations

from pathlib import Path

from ..model import SparseModel
from .csim import run_csim
from .project import DEFAULT_PARALLELISM, generate_project
from .report import make_report
from .sim import run_sim


def run_layer_flow(model: SparseModel, layer_name: str, outdir, parallelism: int = DEFAULT_PARALLELISM,
                   calibration=None, relu: bool = False, simulate_rtl: bool = True,
                   synth: bool = False, **generate_options) -> dict:
    """Export ``layer_name`` of ``model`` to ``outdir``, run the g++ C simulation and (unless
    ``simulate_rtl`` is False) the Verilator RTL simulation; return a report dict:
    ``csim_bit_exact``, ``rtl_bit_exact``, ``cycles`` (RTL), ``ideal_cycles``, ``dense_cycles``,
    ``speedup_vs_dense``, ``pe_utilisation``, ``rom_bytes``, ``error_vs_float``, ``dir``."""
    desc = generate_project(model, layer_name, outdir, parallelism=parallelism,
                            calibration=calibration, relu=relu, **generate_options)
    csim = run_csim(outdir)
    sim = run_sim(outdir) if simulate_rtl else None
    report = make_report(outdir, synth=synth)
    return {"layer": layer_name, "dir": str(Path(outdir)), "P": desc["P"],
            "csim_bit_exact": csim["bit_exact"], "csim_mismatches": csim["mismatches"],
            "rtl_bit_exact": None if sim is None else sim["bit_exact"],
            "rtl_mismatches": None if sim is None else sim["mismatches"],
            "cycles": None if sim is None else sim["cycles"],
            "ideal_cycles": desc["ideal_cycles"], "dense_cycles": desc["dense_cycles"],
            "density": desc["density"], "speedup_vs_dense": report.get("speedup_vs_dense"),
            "pe_utilisation": report.get("pe_utilisation"), "rom_bytes": desc["rom_bytes"],
            "error_vs_float": desc["error_vs_float"], "report": report}
