"""``kepsparse demo``: the product end to end on a small CNN and real data (sklearn's digits,
1,797 real 8x8 handwritten digits that ship inside scikit-learn).

1. train the digits CNN (seeded; dense accuracy on a fixed held-out split);
2. KEP-prune it: prior-knowledge pattern masks, growing penalty, hard prune, masked fine-tune;
3. save a ``torch.nn.utils.prune`` checkpoint, ``convert`` it, ``save``/``load`` the .kep;
4. run the whole network with kepsparse's sparse kernels on every available backend and
   check it predicts torch's class for every test image;
5. export one pruned layer to the FPGA flow: HLS C++ (g++ C-sim) and Verilog RTL (cocotb on
   Verilator), both bit-exact with the integer golden model, with cycle counts.
Returns 0 when every check passes.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def _layer_table(title, rows, columns):
    from rich.table import Table
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 or col == "format" else "right")
    for row in rows:
        table.add_row(*row)
    return table


def run_demo(workdir=None, sparsity: float = 0.8, seed: int = 0, fpga: bool = True) -> int:
    import torch
    from rich.console import Console

    import kepsparse as ks
    from .nets.digits import sparse_agreement, train_digits_cnn
    from .prune import kep_prune
    from .prune.common import save_checkpoint

    console = Console()
    tmp = tempfile.TemporaryDirectory(prefix="kepsparse-demo-") if workdir is None else None
    work = Path(tmp.name if tmp else workdir)
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    checks: dict[str, bool] = {}
    t_start = time.perf_counter()
    console.rule("[bold]kepsparse demo: digits CNN, KEP-pruned, run sparse, exported to RTL")

    # 1. train
    with console.status("training the digits CNN (sklearn digits, seeded)"):
        net, loaders, acc_dense = train_digits_cnn(seed)
    n_test = len(loaders["test"].dataset)
    console.print(f"[bold]1. trained[/] digits CNN, {sum(p.numel() for p in net.parameters()):,} "
                  f"parameters: dense accuracy {acc_dense:.2f}% on {n_test} held-out real digits")

    # 2. KEP prune
    few = sparsity >= 0.9  # at 90 % a 3-pattern library keeps index bytes under 15 %
    with console.status(f"KEP pruning to {sparsity:.0%} (penalty, hard prune, fine-tune)"):
        pruned, report = kep_prune(net, loaders, sparsity, patterns=3 if few else 8,
                                   finetune_epochs=20 if few else 10, seed=seed)
    acc = report["accuracy"]
    console.print(f"[bold]2. KEP-pruned[/]: conv sparsity {report['conv_sparsity']['model']:.1%} "
                  f"(first conv kept dense), params {report['params']['before']:,} -> "
                  f"{report['params']['after']:,}, FLOPs {report['flops']['before']:,} -> "
                  f"{report['flops']['after']:,}; accuracy {acc['dense']:.2f}% -> {acc['final']:.2f}% "
                  f"(drop {acc['drop']:+.2f})")
    checks["accuracy drop <= 1 point"] = acc["drop"] <= 1.0

    # 3. checkpoint -> convert -> save -> load
    ckpt, kep = work / "digits_kep.pt", work / "digits_kep.kep"
    save_checkpoint(pruned, ckpt, masks=pruned.kep_masks, prune_masks=True)
    from_ckpt = ks.convert(ckpt)
    model = ks.convert(pruned)  # the live module also records stride/padding
    checks["checkpoint and module convert alike"] = all(
        np.array_equal(model[n].weight.to_dense(), from_ckpt[n].weight.to_dense()) for n in model.layers)
    ks.save(model, kep)
    loaded = ks.load(kep)
    rows = []
    for r in loaded.summary()["layers"]:
        rows.append((r["name"], "x".join(map(str, r["shape"])), r["format"], f"{r['sparsity']:.1%}",
                     f"{r['value_bytes']:,}", f"{r['index_bytes']:,}",
                     f"{r['index_bytes'] / max(r['value_bytes'], 1):.1%}"))
    console.print(f"[bold]3. converted[/] {ckpt.name} (torch.nn.utils.prune masks) -> {kep.name} "
                  f"({kep.stat().st_size:,} bytes), loaded and validated")
    console.print(_layer_table(kep.name, rows, ("layer", "shape", "format", "sparsity", "value B",
                                                "index B", "index/value")))

    # 4. whole network through the sparse kernels, every backend
    rows = []
    for backend, why in ks.backend_status().items():
        if why is not None:
            rows.append((backend, "-", "-", "-", f"unavailable: {why}"))
            continue
        s = sparse_agreement(pruned, loaders["test"], backend=backend)
        same = s["same_class"] == s["images"]
        checks[f"{backend}: same class as torch on every image"] = same
        rows.append((backend, f"{s['same_class']}/{s['images']}", f"{s['sparse_accuracy']:.2f}%",
                     f"{s['max_abs_logit_err']:.1e}", "[green]ok" if same else "[red]MISMATCH"))
    console.print("[bold]4. ran[/] the pruned network with kepsparse's sparse kernels "
                  "(every conv sparse; pooling and classifier in NumPy)")
    console.print(_layer_table("sparse run vs torch on the held-out digits", rows,
                               ("backend", "same class", "accuracy", "max |logit diff|", "")))

    # 4b. the same network from ONNX, graph and all, through the runtime (no torch on this path)
    _graph_step(console, pruned, loaders, work, checks)

    # 5. FPGA: one pruned layer through HLS C-sim and RTL simulation
    if fpga:
        _fpga_step(console, loaded, pruned, loaders, work, checks)

    failed = [name for name, ok in checks.items() if not ok]
    for name in failed:
        console.print(f"[red]check failed:[/] {name}")
    console.rule(f"[green]all {len(checks)} checks passed" if not failed else
                 f"[red]{len(failed)} of {len(checks)} checks failed")
    console.print(f"demo took {time.perf_counter() - t_start:.0f} s; files in "
                  f"{'a temporary folder (use --workdir to keep them)' if tmp else work}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if not failed else 1


def _graph_step(console, pruned, loaders, work, checks) -> None:
    import torch

    import kepsparse as ks
    from .runtime.netutil import export_onnx

    onnx_path, kep_path = work / "digits_kep.onnx", work / "digits_kep_graph.kep"
    export_onnx(pruned, (1, 8, 8), onnx_path)
    ks.save(ks.convert(onnx_path), kep_path)
    graph_model = ks.load(kep_path)
    x = torch.cat([xb for xb, _ in loaders["test"]])
    with torch.no_grad():
        ref = pruned(x).numpy()
    xn = x.numpy()
    y = graph_model(xn)
    same = int((y.argmax(1) == ref.argmax(1)).sum())
    err = float(np.abs(y - ref).max())
    checks["graph runtime: same class as torch on every image"] = same == len(xn)

    def best_ms(fn, repeats=20):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 1e3 * min(times)

    t_kep = best_ms(lambda: graph_model(xn))
    with torch.no_grad():
        t_torch = best_ms(lambda: pruned(x))
    timing = f"kepsparse {t_kep:.2f} ms, torch dense {t_torch:.2f} ms"
    try:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        timing += f", onnxruntime dense {best_ms(lambda: sess.run(None, {name: xn})):.2f} ms"
    except ImportError:
        pass
    console.print(f"[bold]4b. ran[/] the ONNX export of the pruned net through kepsparse's graph "
                  f"runtime ({graph_model.summary()['graph']['nodes']} nodes): "
                  f"{same}/{len(xn)} same class as torch, max |logit diff| {err:.1e}; "
                  f"{len(xn)} images: {timing} (a tiny 8x8 net: per-call overhead dominates; "
                  f"see `kepsparse bench` for real layer shapes)")


def _fpga_step(console, loaded, pruned, loaders, work, checks) -> None:
    import torch

    from .errors import BackendUnavailableError
    from .fpga import run_layer_flow

    name = "conv3"  # a KEP-pruned pattern layer, 32 -> 64 channels on 4x4 maps
    seen = []
    hook = dict(pruned.named_modules())[name].register_forward_hook(
        lambda m, inp, out: seen.append(inp[0].detach().numpy()))
    with torch.no_grad():
        for x, _ in loaders["test"]:
            pruned(x)
    hook.remove()
    calibration = np.concatenate(seen)[:64]
    try:
        with console.status(f"FPGA flow for {name}: HLS C++ C-sim (g++), RTL (Verilator + cocotb)"):
            r = run_layer_flow(loaded, name, work / "hls", parallelism=4, calibration=calibration,
                               relu=True)
    except BackendUnavailableError as exc:
        console.print(f"[yellow]5. FPGA step skipped:[/] {exc}")
        return
    checks["HLS C-sim bit-exact with the golden model"] = bool(r["csim_bit_exact"])
    checks["RTL simulation bit-exact with the golden model"] = bool(r["rtl_bit_exact"])
    console.print(
        f"[bold]5. exported[/] layer {name} (P={r['P']} MACs, density {r['density']:.1%}) to "
        f"HLS C++ + Verilog: C-sim bit-exact {r['csim_bit_exact']}, RTL bit-exact "
        f"{r['rtl_bit_exact']}; RTL cycles {r['cycles']:,} (ideal {r['ideal_cycles']:,}, "
        f"{r['cycles'] / r['ideal_cycles']:.3f}x), dense engine {r['dense_cycles']:,} -> "
        f"{r['speedup_vs_dense']:.2f}x fewer cycles; weight ROM {r['rom_bytes']:,} bytes")
