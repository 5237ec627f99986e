"""Reporting: summary (geometric means, the issue's targets), rich tables, markdown, plot.

Everything here reads the result document of ``runner.run_bench`` (also what ``--json``
writes), so a saved run can be re-rendered (``kepsparse bench --from-json FILE``).

Series compared with the baseline competitor (onnxruntime when present):
- each kernel contender (``name`` or ``name:format``), ``auto`` and each dense competitor;
- ``best-of-N cpp`` / ``best-of-N numba``: per case, the fastest of the N verified kernels
  of that backend. Informational only: picking the fastest of several noisy timings and
  reporting that same timing is biased towards luck (more so with ``--stat min``), so no
  target is judged on it.
Geometric means are over the distinct layer shapes of the focus network (ResNet-18 when it
was run, else every selected layer), per batch, threads, structure and sparsity.

The issue's targets are judged on ``auto`` - what ``conv2d(..., backend="auto")`` gives a
user, one kernel chosen without looking at the timings - so its time is an unbiased sample.
"""
from __future__ import annotations

import math
from collections import defaultdict

FOCUS_NETWORK = "resnet18"
BASELINE = "onnxruntime"
SHORT = {"torch_nchw": "torch", "torch_channels_last": "torch_cl", "onnxruntime": "ort"}

AUTO = "auto"
BEST_PREFIX = "best-of-N "  # series name prefix of the informational fastest-of-backend series

# (label, structure, sparsity, threshold) on the ``auto`` contender's speedup vs onnxruntime
SPEEDUP_TARGETS = (("KEP pattern @90%: auto (C++) >= 6x onnxruntime", "kep", 0.9, 6.0),
                   ("KEP pattern @80%: auto (C++) >= 3.5x onnxruntime", "kep", 0.8, 3.5),
                   ("KEP pattern @50%: auto (C++) >= 1.3x onnxruntime", "kep", 0.5, 1.3),
                   ("unstructured @90%: auto (C++) >= 4x onnxruntime", "random", 0.9, 4.0))
USEFUL_TARGET = ("KEP pattern @90%: auto (C++) useful >= 120 GFLOP/s", "kep", 0.9, 120.0)
NUMBA_TARGET = ("numba within 2x of C++ (numba kernel of auto's format / auto, time ratio <= 2)", 2.0)
TARGET_BATCH, TARGET_THREADS = 1, 2


def geomean(values) -> float | None:
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def _ok(case, name):
    for r in case["results"]:
        if r["name"] == name and r["status"] == "ok":
            return r
    return None


STAT_KEYS = {"median": "time_s", "min": "min_s"}


def stat_key(doc, stat: str | None = None) -> str:
    return STAT_KEYS[stat or doc["settings"].get("stat", "median")]


def _best(case, backend=None, key="t_s"):
    """Best-of-N (informational only): the fastest verified kernel (of ``backend``)."""
    rows = [r for r in case["results"] if r["kind"] == "kernel" and r["status"] == "ok"
            and (backend is None or r["backend"] == backend)]
    return (min(rows, key=lambda r: r[key]), len(rows)) if rows else (None, 0)


def _chosen_backend(case, auto_row) -> str | None:
    """Backend of the kernel ``auto`` ran in ``case`` (None when unknown)."""
    chosen = auto_row.get("chosen") if auto_row else None
    if not chosen:
        return None
    for r in case["results"]:
        if r["kind"] == "kernel" and r["name"].split(":")[0] == chosen:
            return r["backend"]
    try:
        from ..kernels import registry
        return registry.get(chosen).backend
    except Exception:  # a kernel of another build/machine: unknown here
        return None


def _numba_peer(case, auto_row):
    """The numba kernel of the format ``auto`` ran (when auto ran a C++ kernel), else None:
    a fixed pairing, chosen without looking at timings."""
    if auto_row is None or _chosen_backend(case, auto_row) != "cpp":
        return None
    for r in case["results"]:
        if (r["kind"] == "kernel" and r["backend"] == "numba" and r["status"] == "ok"
                and r["format"] == auto_row["format"]):
            return r
    return None


def _speedup(case, row, base, key):
    b = _ok(case, base) if base else None
    return None if b is None or row is None else b[key] / row[key]


def _useful(case, row, key):
    return None if row is None else case["useful_flops"] / row[key] / 1e9


def series_names(doc) -> list[str]:
    c = doc["contenders"]
    names = [n for n in c["competitors"] if n != baseline(doc)] + list(c["kernels"])
    backends = sorted({r["backend"] for case in doc["cases"] for r in case["results"]
                       if r["kind"] == "kernel"})
    names += [f"{BEST_PREFIX}{b}" for b in backends if b != "reference"]
    if c["auto"]:
        names.append(AUTO)
    return names


def baseline(doc) -> str | None:
    comps = doc["contenders"]["competitors"]
    return BASELINE if BASELINE in comps else (comps[0] if comps else None)


def series_row(case, name, key="t_s"):
    """The result row that stands for series ``name`` in ``case`` (or None)."""
    if name.startswith(BEST_PREFIX):
        return _best(case, name[len(BEST_PREFIX):], key)[0]
    return _ok(case, name)


def _main_series(name) -> bool:
    return name.startswith(BEST_PREFIX) or name == AUTO


def focus(doc) -> tuple[str, list[dict]]:
    cases = [c for c in doc["cases"] if c["network"] == FOCUS_NETWORK]
    if cases:
        return FOCUS_NETWORK, cases
    return "all selected", list(doc["cases"])


def _groups(cases):
    groups = defaultdict(list)
    for c in cases:
        groups[(c["batch"], c["threads"], c["structure"], c["sparsity"])].append(c)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2], kv[0][3])))


def summarize(doc, stat: str | None = None) -> dict:
    """Geomeans and targets from the ``stat`` time (default: the run's ``--stat``)."""
    key = stat_key(doc, stat)
    base = baseline(doc)
    name, cases = focus(doc)
    out = {"focus": name, "baseline": base, "stat": stat or doc["settings"].get("stat", "median"),
           "geomean": [], "targets": []}
    names = series_names(doc)
    for (n, t, st, sp), group in _groups(cases).items():
        entry = {"batch": n, "threads": t, "structure": st, "sparsity": sp, "layers": len(group),
                 "speedup": {}, "useful_gflops": {}}
        for s in names:
            sp_vals, gf_vals = [], []
            for c in group:
                r = series_row(c, s, key)
                if r is None:
                    continue
                gf_vals.append(_useful(c, r, key))
                if base is not None and s != base:
                    sp_vals.append(_speedup(c, r, base, key))
            if gf_vals:
                entry["useful_gflops"][s] = {"geomean": geomean(gf_vals), "n": len(gf_vals)}
            if sp_vals:
                entry["speedup"][s] = {"geomean": geomean(sp_vals), "n": len(sp_vals)}
        out["geomean"].append(entry)
    out["targets"] = _targets(doc, key)
    return out


def _targets(doc, key) -> list[dict]:
    cases = [c for c in doc["cases"] if c["network"] == FOCUS_NETWORK
             and c["batch"] == TARGET_BATCH and c["threads"] == TARGET_THREADS]
    where = f"ResNet-18 3x3 layers, batch {TARGET_BATCH}, {TARGET_THREADS} threads, geomean"
    targets = []

    def judge(label, values, threshold, higher_is_better=True, expected=None, notes=()):
        t = {"target": label, "threshold": threshold, "where": where, "value": None, "n": 0,
             "contender": AUTO}
        vals = [v for v in values if v is not None]
        if not vals:
            t["status"] = "not measured"
            if not cases:
                t["note"] = f"ResNet-18 at batch {TARGET_BATCH}, {TARGET_THREADS} threads is not in this run"
            elif expected == 0:
                t["note"] = "this structure and sparsity is not in this run"
            else:
                t["note"] = ("no verified result of the contenders it compares (the targets are "
                             "judged on auto: run with --kernels including auto)")
        else:
            g = geomean(vals)
            t.update(value=g, n=len(vals))
            notes = list(notes)
            if expected is not None and len(vals) < expected:
                notes.insert(0, f"only {len(vals)} of {expected} layers measured")
            if notes:
                t["note"] = "; ".join(notes)
            t["status"] = "met" if (g >= threshold if higher_is_better else g <= threshold) else "missed"
        targets.append(t)

    def pick(structure, sparsity):
        return [c for c in cases if c["structure"] == structure and abs(c["sparsity"] - sparsity) < 1e-9]

    def auto_notes(sel):
        autos = [_ok(c, AUTO) for c in sel]
        other = sum(1 for c, a in zip(sel, autos) if a is not None and _chosen_backend(c, a) != "cpp")
        return [f"auto ran a non-C++ kernel on {other} of {len(sel)} layers"] if other else []

    for label, st, sp, thr in SPEEDUP_TARGETS:
        sel = pick(st, sp)
        judge(label, [_speedup(c, _ok(c, AUTO), BASELINE, key) for c in sel], thr,
              expected=len(sel), notes=auto_notes(sel))
    label, st, sp, thr = USEFUL_TARGET
    sel = pick(st, sp)
    judge(label, [_useful(c, _ok(c, AUTO), key) for c in sel], thr, expected=len(sel),
          notes=auto_notes(sel))
    label, thr = NUMBA_TARGET
    ratios = []
    for c in cases:
        a = _ok(c, AUTO)
        nb = _numba_peer(c, a)
        ratios.append(None if nb is None else nb[key] / a[key])
    judge(label, ratios, thr, higher_is_better=False, expected=len(cases))
    return targets


# ----------------------------------------------------------------------------- text output
def _fmt_x(v):
    return "-" if v is None else f"{v:.2f}x"


def _fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def target_lines(doc) -> list[str]:
    lines = []
    for t in doc["summary"]["targets"]:
        if t["status"] == "not measured":
            lines.append(f"{t['target']}: NOT MEASURED ({t.get('note', '')})")
            continue
        if "GFLOP" in t["target"]:
            val = f"{t['value']:.1f} GFLOP/s"
        elif "ratio" in t["target"]:
            val = f"ratio {t['value']:.2f}"
        else:
            val = f"{t['value']:.2f}x"
        note = f" ({t['note']})" if t.get("note") else ""
        lines.append(f"{t['target']}: {val} -> {t['status'].upper()}{note}")
    return lines


def summary_line(doc) -> str:
    s = doc["summary"]
    base = s["baseline"]
    parts = []
    for e in s["geomean"]:
        if (e["batch"], e["threads"]) != (TARGET_BATCH, TARGET_THREADS) and len(
                {(g["batch"], g["threads"]) for g in s["geomean"]}) > 1:
            continue
        main = sorted(((k, v["geomean"]) for k, v in e["speedup"].items() if _main_series(k)),
                      key=lambda kv: kv[0] != AUTO)  # auto first: it is what the targets judge
        if main:
            parts.append(f"{e['structure']}@{e['sparsity']:g}: " +
                         " ".join(f"{k} {v:.2f}x" for k, v in main))
    return (f"geomean speedup vs {base} over {s['focus']} layers (best-of-N: fastest of N noisy "
            "timings, biased upwards, informational): " + "; ".join(parts)) if parts else \
        f"no geomean speedup vs {base} (no verified kernel and baseline pair)"


def rich_tables(doc, console, full: bool = True) -> None:
    from rich.table import Table
    base = baseline(doc)
    comps = doc["contenders"]["competitors"]
    if full:
        table = Table(title="kepsparse bench: every case and contender (speedups and GF/s from the "
                            f"{doc['settings'].get('stat', 'median')} time)")
        for col in ("case", "contender", "fmt", "median ms", "p90 ms", "min ms", *[f"x{SHORT.get(c, c)}" for c in comps],
                    "useful GF/s", "dense GF/s", "status"):
            table.add_column(col, justify="left" if col in ("case", "contender", "fmt", "status")
                             else "right")
        for case in doc["cases"]:
            table.add_section()
            label = (f"{case['network']}/{case['layer']}\n{case['shape']}\nN={case['batch']} "
                     f"T={case['threads']} {case['structure']} {case['actual_sparsity']:.3f}")
            for k, r in enumerate(case["results"]):
                ok = r["status"] == "ok"
                sp = r.get("speedup", {})
                name = r["name"] + (f" ({r['chosen']})" if r.get("chosen") else "")
                table.add_row(
                    label if k == 0 else "", name, r["format"],
                    _fmt(r.get("time_s", None) and r["time_s"] * 1e3, ".3f"),
                    _fmt(r.get("p90_s", None) and r["p90_s"] * 1e3, ".3f"),
                    _fmt(r.get("min_s", None) and r["min_s"] * 1e3, ".3f"),
                    *[_fmt_x(sp.get(c)) if ok and c != r["name"] else "" for c in comps],
                    _fmt(r.get("useful_gflops")), _fmt(r.get("dense_gflops")),
                    "ok" if ok else f"[red]{r['status']}[/red]: {r['detail'][:70]}")
        console.print(table)
    s = doc["summary"]
    if base is not None and s["geomean"]:
        names = [n for n in series_names(doc)]
        table = Table(title=f"geomean speedup vs {base} over {s['focus']} layers")
        for col in ("N", "T", "struct", "sparsity", "layers", *names):
            table.add_column(col, justify="left" if col == "struct" else "right")
        for e in s["geomean"]:
            table.add_row(str(e["batch"]), str(e["threads"]), e["structure"], f"{e['sparsity']:g}",
                          str(e["layers"]),
                          *[_fmt_x(e["speedup"].get(n, {}).get("geomean")) for n in names])
        console.print(table)
    console.print(summary_line(doc))
    loads = [x for x in ((doc["machine"].get("loadavg_start") or [None])[0],
                         (doc["machine"].get("loadavg_end") or [None])[0]) if x is not None]
    if loads and max(loads) > (doc["machine"].get("cpu_count") or 2) + 1:
        console.print(f"[yellow]busy machine[/yellow]: 1-minute load average {max(loads):.1f} on "
                      f"{doc['machine'].get('cpu_count')} CPUs during the run; times are noisy "
                      "(compare with --stat min)")
    for line in target_lines(doc):
        style = "green" if line.endswith("MET") else ("red" if "MISSED" in line else "yellow")
        console.print(f"[{style}]target[/{style}] {line}")
    for n in doc.get("unavailable", []):
        what = n.get("kernel") or n.get("competitor")
        console.print(f"[yellow]not measured[/yellow] {what}: {n['unavailable']}")
    bad = [(c, r) for c in doc["cases"] for r in c["results"] if r["status"] in ("wrong", "error")]
    for c, r in bad[:20]:
        console.print(f"[red]{r['status']}[/red] {r['name']} on {c['network']}/{c['layer']} "
                      f"{c['structure']}@{c['sparsity']:g}: {r['detail']}")


def markdown(doc, plot_path: str | None = None, title: str = "kepsparse layer benchmark results",
             level: int = 1) -> str:
    """A markdown report: command, machine, per-case speedups, geomeans, targets.
    ``level``: heading level of the title (sections go one deeper)."""
    m = doc["machine"]
    base = baseline(doc)
    names = series_names(doc)
    h = "#" * level
    lines = [f"{h} {title}", "",
             "Generated by `kepsparse bench` (kepsparse/bench). Re-render from the JSON with "
             "`kepsparse bench --from-json FILE --markdown FILE`.", "",
             "Command:", "", "```", doc.get("command", ""), "```", "",
             f"- machine: {m.get('cpu')}, {m.get('cpu_count')} logical CPUs, {m.get('platform')}",
             f"- versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()),
             f"- load average at start / end: {_fmt_load(m.get('loadavg_start'))} / "
             f"{_fmt_load(m.get('loadavg_end'))}; run took {doc.get('elapsed_s', 0):.0f} s",
             f"- timing: warm-up {doc['settings']['warmup_s']} s per contender, then "
             f"{doc['settings']['budget_s']} s of timed calls (>= {doc['settings']['min_repeats']}) "
             f"spread over {doc['settings'].get('rounds', 1)} interleaved rounds that visit every "
             "contender of a case in turn; median, p90 and min recorded (JSON); speedups and GFLOP/s "
             f"below use the **{doc['settings'].get('stat', 'median')}**; every output verified "
             "against " + doc.get("judge", "torch") +
             f" (max error <= {doc['settings']['tolerance']:g} of max |y|) before timing",
             "- the machine is shared and noisy (other jobs ran at the same time; +-30% between "
             "runs is normal): compare ratios within one run, not absolute times across runs.", ""]
    if doc.get("partial"):
        lines += [f"**Partial run**: it stopped after {len(doc['cases'])} cases.", ""]
    if plot_path:
        lines += [f"![speedup vs sparsity]({plot_path})", ""]
    lines += [f"{h}# Targets (issue 3)", "",
              "Judged on `auto` (the kernel `backend=\"auto\"` picks without timing anything, i.e. "
              "what a user gets), not on the fastest of several kernels, whose time is biased "
              "upwards by the selection.", ""] + [f"- {t}" for t in target_lines(doc)] + [""]
    s = doc["summary"]
    if base is not None and s["geomean"]:
        lines += [f"{h}# Geometric-mean speedup vs {base} over {s['focus']} layers", "",
                  "| N | T | structure | sparsity | layers | " + " | ".join(names) + " |",
                  "|" + "---|" * (5 + len(names))]
        for e in s["geomean"]:
            lines.append(f"| {e['batch']} | {e['threads']} | {e['structure']} | {e['sparsity']:g} | "
                         f"{e['layers']} | " + " | ".join(
                             _fmt_x(e["speedup"].get(n, {}).get("geomean")) for n in names) + " |")
        lines.append("")
        other = "min" if s.get("stat", "median") == "median" else "median"
        alt = summarize(doc, other)
        alt_names = [n for n in names if _main_series(n) or n in SHORT]
        lines += [f"Cross-check with the **{other}** time instead of the {s.get('stat', 'median')} "
                  "(same run; a large difference means the load of other processes moved the "
                  "numbers):", "",
                  "| N | T | structure | sparsity | " + " | ".join(alt_names) + " |",
                  "|" + "---|" * (4 + len(alt_names))]
        for e in alt["geomean"]:
            lines.append(f"| {e['batch']} | {e['threads']} | {e['structure']} | {e['sparsity']:g} | " +
                         " | ".join(_fmt_x(e["speedup"].get(n, {}).get("geomean"))
                                    for n in alt_names) + " |")
        lines += ["", f"Targets judged on the {other} time:", ""]
        lines += [f"- {t}" for t in target_lines({"summary": alt})] + [""]
        lines += [f"{h}# Geometric-mean useful GFLOP/s (non-zeros only) over {s['focus']} layers", "",
                  "| N | T | structure | sparsity | " + " | ".join(names) + " |",
                  "|" + "---|" * (4 + len(names))]
        for e in s["geomean"]:
            lines.append(f"| {e['batch']} | {e['threads']} | {e['structure']} | {e['sparsity']:g} | " +
                         " | ".join(_fmt(e["useful_gflops"].get(n, {}).get("geomean"))
                                    for n in names) + " |")
        lines.append("")
    names = [n for n in names if _main_series(n) or n in SHORT]
    lines += [f"{h}# Every case", "",
              f"Times in ms ({doc['settings'].get('stat', 'median')}); `x` columns: speedup vs {base} (its time / the contender's); "
              "`auto`: what `backend=\"auto\"` gives a user (the targets are judged on it); "
              "`best-of-N <backend>` and `best-of-N kernel`: the fastest of the N verified kernels "
              "(of that backend) - informational only, biased upwards by picking the luckiest of N "
              "noisy timings; every kernel's own numbers are in the geomean tables above and in the "
              "JSON. auto GF/s: useful (non-zeros) GF/s of auto; the baseline's dense-equivalent GF/s. load: the "
              "1-minute load average when the case started (2 cores; this run itself adds up to ~2, so "
              "well above 3 means other processes competed for the cores).", "",
              f"| layer | shape | N | T | structure | sparsity | {SHORT.get(base, base)} ms | "
              + " | ".join(f"x {n}" for n in names) + " | auto kernel | auto useful GF/s | "
              f"best-of-N kernel (N) | {SHORT.get(base, base)} dense GF/s | load |",
              "|" + "---|" * (12 + len(names))]
    for c in doc["cases"]:
        b = _ok(c, base) if base else None
        cells = []
        for n in names:
            r = series_row(c, n)
            if r is None:
                bad = next((x for x in c["results"] if x["name"] == n and x["status"] != "ok"), None)
                cells.append(bad["status"] if bad else "-")
            else:
                cells.append(_fmt_x(r.get("speedup", {}).get(base)))
        a = _ok(c, AUTO)
        best, n_best = _best(c)
        best_cell = f"{best['name']} ({n_best})" if best else "-"
        lines.append(f"| {c['network']}/{c['layer']} | {c['shape']} | {c['batch']} | {c['threads']} | "
                     f"{c['structure']} | {c['actual_sparsity']:.3f} | "
                     f"{_fmt(b and b['t_s'] * 1e3, '.3f')} | " + " | ".join(cells) +
                     f" | {(a.get('chosen') or '-') if a else '-'} | {_fmt(a and a['useful_gflops'])} | "
                     f"{best_cell} | "
                     f"{_fmt(b and b['dense_gflops'])} | {_fmt(c.get('loadavg_1min'), '.1f')} |")
    lines.append("")
    notes = doc.get("unavailable", [])
    if notes:
        lines += [f"{h}# Not measured", ""] + [
            f"- {n.get('kernel') or n.get('competitor')}: {n['unavailable']}" for n in notes] + [""]
    return "\n".join(lines)


def _fmt_load(v):
    return "?" if not v else "/".join(f"{x:.2f}" for x in v)


# ----------------------------------------------------------------------------- plot
def plot(doc, path) -> None:
    """Speedup vs sparsity, one panel per structure (rows: batch/threads), one line per
    kernel/competitor; geometric mean over the focus layers."""
    try:
        import matplotlib
    except ImportError:
        from ..errors import BackendUnavailableError
        raise BackendUnavailableError("--plot needs matplotlib (pip install kepsparse[data])",
                                      field="plot") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    s = doc["summary"]
    base = s["baseline"]
    combos = sorted({(e["batch"], e["threads"]) for e in s["geomean"]}, key=lambda bt: (bt[0], -bt[1]))
    structures = [st for st in ("kep", "filter", "random") if any(e["structure"] == st for e in s["geomean"])]
    structures += sorted({e["structure"] for e in s["geomean"]} - set(structures))
    names = series_names(doc)
    rows, cols = max(len(combos), 1), max(len(structures), 1)
    ncol = max(2, min(5, int(4.4 * cols / 2.3)))
    legend_h = 0.25 + 0.2 * (-(-(len(names) + 1) // ncol))
    fig_h = 3.2 * rows + legend_h + 0.4
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(4.4 * cols, fig_h))
    colors = plt.get_cmap("tab20").colors
    key = "speedup" if base is not None else "useful_gflops"
    for i, (n, t) in enumerate(combos):
        for j, st in enumerate(structures):
            ax = axes[i][j]
            entries = sorted([e for e in s["geomean"] if (e["batch"], e["threads"], e["structure"]) ==
                              (n, t, st)], key=lambda e: e["sparsity"])
            for k, name in enumerate(names):
                pts = [(e["sparsity"], e[key][name]["geomean"]) for e in entries if name in e[key]]
                if pts:
                    main = _main_series(name)
                    style = "--" if name in SHORT else ("-" if main else ":")
                    strong = {f"{BEST_PREFIX}cpp": "tab:red", f"{BEST_PREFIX}numba": "tab:blue",
                              AUTO: "tab:green"}
                    color = strong.get(name, colors[k % len(colors)])
                    ax.plot(*zip(*pts), style, marker="o", ms=3 if main else 2,
                            lw=2.2 if main else 1.0, color=color, label=name)
            if base is not None:
                ax.axhline(1.0, color="k", lw=0.8, label=base)
                ax.set_yscale("log")
            ax.set_title(f"{st}, batch {n}, {t} thr", fontsize=9)
            ax.set_xlabel("sparsity")
            if j == 0:
                ax.set_ylabel(f"speedup vs {base}" if base else "useful GFLOP/s")
            ax.grid(True, which="both", alpha=0.3)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), ncol), fontsize=7,
                   bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"kepsparse: geomean over {s['focus']} layers", fontsize=10)
    fig.tight_layout(rect=(0, legend_h / fig_h, 1, 1 - 0.35 / fig_h))
    fig.savefig(path, dpi=110)
    plt.close(fig)
