"""``kepsparse hls csim DIR``: compile the generated HLS C++ with g++ and run its testbench.

The testbench compares every output with the golden vectors itself; this runner also reads
the outputs it wrote back and compares them with the golden model (two independent checks).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, KepError
from .project import load_project, load_vectors

CXX_FLAGS = ["-std=c++14", "-O2", "-Wall", "-Wextra", "-Wno-unknown-pragmas", "-Wno-unused-label"]


def find_cxx() -> str:
    cxx = os.environ.get("CXX") or "g++"
    path = shutil.which(cxx)
    if path is None:
        raise BackendUnavailableError(
            f"C simulation needs a C++ compiler but {cxx!r} is not on PATH: install g++ "
            "(Debian/Ubuntu: apt-get install g++) or set CXX to your compiler")
    return path


def run_csim(directory, timeout: float = 300.0) -> dict:
    """Build and run the C simulation of a generated project. Returns
    ``{"bit_exact", "mismatches", "outputs", "cycles", "log"}``; raises KepError when the
    build itself fails."""
    desc = load_project(directory)
    d = Path(desc["dir"])
    cxx = find_cxx()
    exe = d / "csim.out"
    try:
        build = subprocess.run([cxx, *CXX_FLAGS, "-I.", "tb.cpp", "kernel.cpp", "-o", exe.name],
                               cwd=d, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise KepError(f"g++ did not finish building the C simulation within {timeout:g} s",
                       path=d) from None
    if build.returncode != 0:
        raise KepError(f"g++ failed to build the C simulation:\n{build.stderr.strip()[-2000:]}",
                       path=d)
    out_file = d / "data" / "csim_output.dat"
    out_file.unlink(missing_ok=True)
    try:
        run = subprocess.run([str(exe)], cwd=d, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise KepError(f"the C simulation did not finish within {timeout:g} s", path=d) from None
    log = run.stdout + run.stderr
    m = re.search(r"csim: outputs=(\d+) mismatches=(\d+) cycles=(\d+)", run.stdout)
    if m is None or not out_file.is_file():
        raise KepError(f"the C simulation did not finish (exit {run.returncode}):\n{log[-2000:]}",
                       path=d)
    outputs, tb_mismatches, cycles = (int(v) for v in m.groups())
    _, golden = load_vectors(d)
    got = np.array(out_file.read_text().split(), dtype=np.int64)
    ours = int(np.count_nonzero(got != golden.reshape(-1).astype(np.int64))) \
        if got.size == golden.size else golden.size
    mismatches = max(tb_mismatches, ours)
    result = {"bit_exact": mismatches == 0 and run.returncode == 0, "mismatches": mismatches,
              "outputs": outputs, "cycles": cycles, "log": log}
    (d / "csim_report.json").write_text(json.dumps(result, indent=2))
    return result
