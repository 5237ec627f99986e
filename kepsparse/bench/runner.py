"""The benchmark runner: every case, every contender, verified, then timed.

Contenders of a case:
- every registered kernel (``kernels.all_kernels()``) on every format it runs, called the way
  the runtime calls it (``prepare`` once, then ``run``); a kernel added to the registry is
  measured with no change here;
- ``auto``: ``kepsparse.conv2d(..., backend="auto")`` on ``pack(w, "auto")`` - what a user gets;
- the dense competitors of ``competitors.py`` on the same weights (zeros included).

Every contender's output is first compared with dense torch ``conv2d`` (the judge; the
reference kernel when torch is missing). A contender whose output differs is refused:
status ``wrong``, no time reported.
"""
from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from ..errors import BackendUnavailableError, KepError, UnsupportedError
from ..formats import pack
from ..geometry import ConvGeometry
from ..kernels import registry
from . import competitors as comp
from .cases import (DEFAULT_BATCHES, DEFAULT_SPARSITIES, DEFAULT_THREADS, STRUCTURES, Case,
                    load_networks, make_cases, make_weight, select_layers)
from .timing import STATS, Timing, sample, warm_up

DEFAULT_TOLERANCE = 1e-4  # max |y - judge| / max |judge|


@dataclass
class BenchConfig:
    networks: list[str] | None = None          # None: every built-in network
    layers: list[str] | None = None            # glob patterns on name or network/name
    structures: list[str] = field(default_factory=lambda: list(STRUCTURES))
    sparsities: list[float] = field(default_factory=lambda: list(DEFAULT_SPARSITIES))
    batches: list[int] = field(default_factory=lambda: list(DEFAULT_BATCHES))
    threads: list[int] = field(default_factory=lambda: list(DEFAULT_THREADS))
    kernels: list[str] | None = None           # None: every available non-reference kernel + auto
    competitors: list[str] | None = None       # None: every available competitor
    shape_files: list[str] = field(default_factory=list)
    budget_s: float = 0.4
    warmup_s: float = 0.1
    min_repeats: int = 3
    max_repeats: int = 10_000
    tolerance: float = DEFAULT_TOLERANCE
    rounds: int = 3                            # interleaved timing rounds per case
    stat: str = "median"                       # statistic behind speedups and GFLOP/s
    seed: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


# ----------------------------------------------------------------------------- contenders
class KernelContender:
    kind = "kernel"

    def __init__(self, kernel: registry.Kernel, fmt: str):
        self.kernel, self.format, self.backend = kernel, fmt, kernel.backend
        self.name = kernel.name if len(kernel.formats) == 1 else f"{kernel.name}:{fmt}"

    def activate(self, threads: int) -> None:
        set_numba_threads(threads)

    def setup(self, x, packed: dict, prepared: dict, geometry: ConvGeometry, threads: int):
        fmt = packed[self.format]
        if isinstance(fmt, Exception):
            raise fmt
        if self.name not in prepared:
            prepared[self.name] = self.kernel.prepare(fmt)
        p, run_kernel = prepared[self.name], self.kernel.run

        def run():
            return run_kernel(p, x, None, geometry, False, threads)

        return run, run


class AutoContender:
    kind = "auto"
    name = backend = "auto"
    format = "auto"

    def activate(self, threads: int) -> None:
        set_numba_threads(threads)

    def setup(self, x, packed: dict, prepared: dict, geometry: ConvGeometry, threads: int):
        from ..conv import conv2d
        fmt = packed["auto"]
        if isinstance(fmt, Exception):
            raise fmt
        self.format = fmt.name
        self.chosen = registry.select_for(fmt, "auto", geometry.groups).name
        stride, padding = geometry.stride, geometry.padding

        def run():
            return conv2d(x, fmt, None, stride=stride, padding=padding, backend="auto",
                          threads=threads)

        return run, run


def set_numba_threads(threads: int) -> None:
    numba = sys.modules.get("numba")
    if numba is not None:
        try:
            numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        except Exception:  # noqa: BLE001 - a numba without a threading layer: leave it
            pass


def resolve_kernels(selection: list[str] | None) -> tuple[list[KernelContender], bool, list[dict]]:
    """(kernel contenders, include auto, notes on unavailable kernels) for ``--kernels``.

    Tokens: ``all`` (every available kernel except the slow reference), ``auto``, ``none``,
    a backend name (its kernels), or a kernel name (optionally ``name:format``)."""
    every = registry.all_kernels(include_unavailable=True)
    by_name = {k.name: k for k in every}
    notes = [{"kernel": k.name, "backend": k.backend, "unavailable": k.unavailable_reason()}
             for k in every if k.unavailable_reason() is not None]
    tokens = ["all"] if selection is None else list(selection)
    chosen: dict[str, KernelContender] = {}
    auto = False
    for tok in tokens:
        if tok == "none":
            continue
        if tok == "auto":
            auto = True
            continue
        if tok == "all":
            auto = True
            picked = [(k, f) for k in every if k.backend != "reference" and
                      k.unavailable_reason() is None for f in k.formats]
        elif tok in registry.BACKENDS:
            picked = [(k, f) for k in every if k.backend == tok for f in k.formats]
            if not picked:
                raise UnsupportedError(f"backend {tok!r} has no registered kernels", field="kernels")
        else:
            name, _, fmt = tok.partition(":")
            if name not in by_name:
                raise UnsupportedError(
                    f"unknown kernel {tok!r}; choose from all, auto, none, "
                    f"{', '.join(registry.BACKENDS)}, {', '.join(sorted(by_name))}", field="kernels")
            k = by_name[name]
            if fmt and fmt not in k.formats:
                raise UnsupportedError(f"kernel {name!r} does not run the {fmt!r} format "
                                       f"(it runs {', '.join(k.formats)})", field="kernels")
            picked = [(k, f) for f in ([fmt] if fmt else k.formats)]
        for k, f in picked:
            why = k.unavailable_reason()
            if why is not None:
                if tok not in ("all",) and tok not in registry.BACKENDS:
                    raise BackendUnavailableError(f"kernel {k.name!r} is unavailable: {why}",
                                                  field="kernels")
                continue
            c = KernelContender(k, f)
            chosen[c.name] = c
    return list(chosen.values()), auto, notes


def resolve_competitors(selection: list[str] | None) -> tuple[list[comp.Competitor], list[dict]]:
    names = list(comp.COMPETITORS) if selection is None else list(selection)
    out, notes = [], []
    for name in names:
        if name == "none":
            continue
        if name not in comp.COMPETITORS:
            raise UnsupportedError(f"unknown competitor {name!r}; choose from "
                                   f"{', '.join(comp.COMPETITORS)} or none", field="competitors")
        why = comp.unavailable_reason(name)
        if why is not None:
            if selection is not None:
                raise BackendUnavailableError(f"competitor {name!r} is unavailable: {why}",
                                              field="competitors")
            notes.append({"competitor": name, "unavailable": why})
            continue
        out.append(comp.Competitor(name))
    return out, notes


# ----------------------------------------------------------------------------- machine
def machine_info() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {"kepsparse": __version__, "numpy": np.__version__}
    for mod in ("torch", "onnxruntime", "onnx", "numba"):
        m = sys.modules.get(mod)
        if m is None:
            try:
                m = __import__(mod)
            except Exception:  # noqa: BLE001 - optional dependency missing or broken
                continue
        versions[mod] = getattr(m, "__version__", "?")
    info["versions"] = versions
    info["loadavg_start"] = _loadavg()
    return info


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


# ----------------------------------------------------------------------------- running
def _check(y, judge: np.ndarray, tol: float) -> tuple[bool, float, str]:
    y = np.asarray(y)
    if y.shape != judge.shape:
        return False, float("inf"), f"output shape {y.shape}, expected {judge.shape}"
    if not np.all(np.isfinite(y)):
        return False, float("inf"), "output holds NaN or Inf"
    scale = max(float(np.abs(judge).max()), 1e-30)
    err = float(np.abs(y.astype(np.float64) - judge).max()) / scale
    if err > tol:
        return False, err, f"refused: max error {err:.2e} of max |y| exceeds {tol:.0e}"
    return True, err, ""


def _release(run) -> None:
    """Let a contender drop resources that would disturb the next one (onnxruntime's
    spinning session: see competitors._OrtRun)."""
    release = getattr(run, "release", None)
    if release is not None:
        release()


def plan(config: BenchConfig) -> list[Case]:
    if config.stat not in STATS:
        raise UnsupportedError(f"unknown statistic {config.stat!r}; choose from {', '.join(STATS)}",
                               field="stat")
    for s in config.sparsities:
        if not 0.0 <= s < 1.0:
            from ..errors import InputError
            raise InputError(f"sparsity must be in [0, 1), got {s}", field="sparsities")
    for name, values in (("batches", config.batches), ("threads", config.threads)):
        if not values or any(int(v) < 1 for v in values):
            from ..errors import InputError
            raise InputError(f"must be integers >= 1, got {values}", field=name)
    for st in config.structures:
        if st not in STRUCTURES:
            raise UnsupportedError(f"unknown structure {st!r}; choose from {', '.join(STRUCTURES)}",
                                   field="structures")
    layers = select_layers(load_networks(config.networks, config.shape_files), config.layers)
    return make_cases(layers, config.structures, config.sparsities, config.batches,
                      config.threads, config.seed)


def run_bench(config: BenchConfig, progress=None, checkpoint=None) -> dict:
    """Run every case of ``config``; returns the JSON-ready result document.

    ``progress(done, total, text)`` is called before each contender and after each case;
    ``checkpoint(doc)`` after each case with the document so far (``doc["partial"]`` true)."""
    cases = plan(config)
    kernels, want_auto, kernel_notes = resolve_kernels(config.kernels)
    competitors, comp_notes = resolve_competitors(config.competitors)
    judge_by_torch = comp.unavailable_reason("torch_nchw") is None
    doc = {"kind": "kepsparse-bench", "version": 1, "machine": machine_info(),
           "command": shlex.join(["kepsparse", *sys.argv[1:]]) if sys.argv else "",
           "settings": config.to_json(),
           "judge": "torch.nn.functional.conv2d" if judge_by_torch else "any_f32_ref",
           "contenders": {"kernels": [c.name for c in kernels], "auto": want_auto,
                          "competitors": [c.name for c in competitors]},
           "unavailable": kernel_notes + comp_notes, "cases": []}
    started = time.time()
    weight_key, w, packed, prepared = None, None, {}, {}
    for i, case in enumerate(cases):
        ls = case.layer
        key = (ls.id, case.structure, case.sparsity)
        if key != weight_key:
            weight_key, prepared = key, {}
            w = make_weight(case.structure, case.sparsity, ls.weight_shape, case.weight_seed())
            packed = {}
            for f in {c.format for c in kernels} | ({"auto"} if want_auto else set()):
                try:
                    packed[f] = pack(w, f)
                except KepError as exc:
                    packed[f] = exc
        rng = np.random.default_rng(case.weight_seed() + case.batch)
        x = rng.standard_normal((case.batch, ls.in_channels, *ls.in_size)).astype(np.float32)
        geometry = ConvGeometry.make(ls.stride, ls.padding)
        if judge_by_torch:
            judge = comp.torch_judge(x, w, ls.stride, ls.padding)
        else:
            ref = registry.get("any_f32_ref")
            judge = ref.run(ref.prepare(pack(w, "csr")), x, None, geometry, False, 1)
        judge = judge.astype(np.float64)
        Ho, Wo = ls.out_size
        nnz = int(np.count_nonzero(w))
        dense_flops = ls.dense_flops(case.batch)
        useful_flops = 2 * nnz * case.batch * Ho * Wo
        rec = {"network": ls.network, "layer": ls.name, "shape": ls.describe(),
               "members": list(ls.members), "count": ls.count,
               "C": ls.in_channels, "O": ls.out_channels, "H": ls.in_size[0], "W": ls.in_size[1],
               "KH": ls.kernel[0], "KW": ls.kernel[1], "stride": ls.stride, "padding": ls.padding,
               "Ho": Ho, "Wo": Wo, "batch": case.batch, "threads": case.threads,
               "structure": case.structure, "sparsity": case.sparsity,
               "actual_sparsity": 1.0 - nnz / w.size, "nnz": nnz,
               "dense_flops": dense_flops, "useful_flops": useful_flops,
               "loadavg_1min": (_loadavg() or [None])[0], "results": []}
        contenders = [*competitors, *kernels, *([AutoContender()] if want_auto else [])]
        timed = []  # (row, contender, run) of the verified contenders
        for c in contenders:
            if progress is not None:
                progress(i, len(cases), f"{ls.id} {case.structure} {case.sparsity:g} "
                                        f"n{case.batch} t{case.threads}: verify {c.name}")
            row = {"name": c.name, "kind": c.kind, "backend": c.backend, "format": c.format,
                   "status": "ok", "detail": ""}
            rec["results"].append(row)
            try:
                if c.kind == "competitor":
                    c.activate(case.threads)
                    run, output = c.setup(x, w, ls.stride, ls.padding, case.threads)
                else:
                    run, output = c.setup(x, packed, prepared, geometry, case.threads)
                    c.activate(case.threads)
                    if c.kind == "auto":
                        row["format"], row["chosen"] = c.format, c.chosen
                ok, err, why = _check(output(), judge, config.tolerance)
                row["max_rel_err"] = err
                if not ok:
                    row["status"], row["detail"] = "wrong", why
                    continue
                warm_up(run, config.warmup_s)
                _release(run)
                timed.append((row, c, run))
            except (UnsupportedError, BackendUnavailableError) as exc:
                row["status"], row["detail"] = "unsupported", str(exc)
            except Exception as exc:  # noqa: BLE001 - one broken contender must not end the run
                row["status"], row["detail"] = "error", f"{type(exc).__name__}: {exc}"
        samples: dict[int, list[float]] = {id(row): [] for row, _, _ in timed}
        rounds = max(1, config.rounds)
        for k in range(rounds):
            for row, c, run in timed:
                if row["status"] != "ok":
                    continue
                if progress is not None:
                    progress(i, len(cases), f"{ls.id} {case.structure} {case.sparsity:g} "
                                            f"n{case.batch} t{case.threads}: time {c.name} "
                                            f"({k + 1}/{rounds})")
                c.activate(case.threads)
                need = -(-config.min_repeats // rounds)
                try:
                    samples[id(row)] += sample(run, config.budget_s / rounds, need,
                                               max(1, config.max_repeats // rounds))
                except Exception as exc:  # noqa: BLE001
                    row["status"], row["detail"] = "error", f"{type(exc).__name__}: {exc}"
                finally:
                    _release(run)  # no thread pool of this contender outlives its block
        for row, _, _ in timed:
            if row["status"] != "ok":
                continue
            t = Timing.of(samples[id(row)])
            row.update(t.to_json())
            row["t_s"] = t.stat(config.stat)
            row["useful_gflops"] = useful_flops / row["t_s"] / 1e9
            row["dense_gflops"] = dense_flops / row["t_s"] / 1e9
        comp_times = {r["name"]: r["t_s"] for r in rec["results"]
                      if r["kind"] == "competitor" and r["status"] == "ok"}
        for r in rec["results"]:
            if r["status"] == "ok":
                r["speedup"] = {n: t / r["t_s"] for n, t in comp_times.items()}
        doc["cases"].append(rec)
        if checkpoint is not None:
            doc["partial"] = True
            checkpoint(doc)
        if progress is not None:
            progress(i + 1, len(cases), f"{ls.id} done")
    doc["partial"] = False
    doc["machine"]["loadavg_end"] = _loadavg()
    doc["elapsed_s"] = time.time() - started
    from .report import summarize
    doc["summary"] = summarize(doc)
    return doc
