"""``kepsparse demo``: the end-to-end job on a small CNN and real images (sklearn's digits).

Steps: build a small CNN, prune it KEP-style (pattern-shared element masks), save a
``torch.nn.utils.prune`` checkpoint, ``convert`` it to .kep, ``load`` it, run every sparse
layer on the activations torch saw, and compare. Prints a readable report; returns 0 when
every layer agrees with torch.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def magnitude_pattern_mask(w: np.ndarray, sparsity: float, n_patterns: int = 8) -> np.ndarray:
    """KEP-style mask by magnitude: each plane keeps one of ``n_patterns`` shared patterns.

    The keep count per plane k is the smallest that lets ~half the planes stay non-empty
    at the target; the library is the most frequent top-k masks; each plane takes the library
    pattern keeping the most L2 norm; the weakest planes are emptied to reach the target.
    """
    O, C, KH, KW = w.shape
    area = KH * KW
    target_nnz = int(round((1.0 - sparsity) * w.size))
    k = max(1, min(area, int(np.ceil(2 * target_nnz / (O * C)))))
    sq = (w.reshape(O * C, area).astype(np.float64)) ** 2
    top = np.argsort(-sq, axis=1)[:, :k]
    cand = np.zeros_like(sq, dtype=bool)
    np.put_along_axis(cand, top, True, axis=1)
    uniq, counts = np.unique(cand, axis=0, return_counts=True)
    library = uniq[np.argsort(-counts, kind="stable")[:n_patterns]]
    kept_norm = sq @ library.T                      # (planes, patterns)
    choice = kept_norm.argmax(axis=1)
    plane_norm = kept_norm[np.arange(O * C), choice]
    n_planes = min(O * C, max(1, target_nnz // k))
    keep_planes = np.argsort(-plane_norm, kind="stable")[:n_planes]
    mask = np.zeros((O * C, area), dtype=bool)
    mask[keep_planes] = library[choice[keep_planes]]
    return mask.reshape(w.shape)


def _digits_batch(n: int, seed: int):
    from sklearn.datasets import load_digits
    digits = load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(digits.images), size=n, replace=False)
    x = (digits.images[idx] / 16.0).astype(np.float32)[:, None]  # (n, 1, 8, 8), real scans
    return np.repeat(np.repeat(x, 2, axis=2), 2, axis=3), digits.target[idx]  # 16x16


def _small_cnn(seed: int):
    import torch
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()


def run_demo(workdir=None, sparsity: float = 0.8, seed: int = 0) -> int:
    import torch
    import torch.nn.utils.prune as prune
    from rich.console import Console
    from rich.table import Table

    import kepsparse as ks

    console = Console()
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="kepsparse-demo-")
        workdir = tmp.name
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    console.rule("[bold]kepsparse demo")

    # 1. a small CNN and real inputs
    net = _small_cnn(seed)
    x, labels = _digits_batch(64, seed)
    console.print(f"model: small CNN, {sum(p.numel() for p in net.parameters()):,} parameters; "
                  f"input: {len(x)} real handwritten digits (sklearn), upsampled to 16x16")

    # 2. KEP-style pruning of every conv but the first (pattern-shared, by magnitude)
    convs = [(name, m) for name, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    for name, m in convs[1:]:
        mask = magnitude_pattern_mask(m.weight.detach().numpy(), sparsity)
        prune.custom_from_mask(m, "weight", torch.from_numpy(mask))
    ckpt = work / "pruned.pt"
    torch.save(net.state_dict(), ckpt)
    console.print(f"pruned to {sparsity:.0%} element sparsity per layer (first conv dense); "
                  f"checkpoint with torch.nn.utils.prune masks: {ckpt}")

    # 3. convert -> save -> load
    model = ks.convert(net)  # the live module gives the geometry; the checkpoint has none
    from_ckpt = ks.convert(ckpt)
    for name in model.layers:
        assert np.array_equal(model[name].weight.to_dense(), from_ckpt[name].weight.to_dense())
    kep = work / "model.kep"
    ks.save(model, kep)
    loaded = ks.load(kep)
    table = Table(title=f"{kep.name}: {kep.stat().st_size:,} bytes on disk")
    for col in ("layer", "shape", "format", "sparsity", "value B", "index B", "index/value"):
        table.add_column(col, justify="left" if col in ("layer", "format") else "right")
    for r in loaded.summary()["layers"]:
        table.add_row(r["name"], "x".join(map(str, r["shape"])), r["format"], f"{r['sparsity']:.1%}",
                      f"{r['value_bytes']:,}", f"{r['index_bytes']:,}",
                      f"{r['index_bytes'] / max(r['value_bytes'], 1):.1%}")
    console.print(table)

    # 4. run every sparse layer on the activations torch saw, compare
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: seen.__setitem__(n, (inp[0], out)))
             for n, m in convs]
    with torch.no_grad():
        logits = net(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    status = ks.backend_status()
    backends = [b for b, why in status.items() if why is None]
    results = Table(title="sparse layers vs torch (dense) on the same activations")
    for col in ("layer", "backend", "max |diff|", "time sparse", "time torch"):
        results.add_column(col, justify="left" if col in ("layer", "backend") else "right")
    ok = True
    for name, _ in convs:
        inp, out = seen[name]
        ref = out.numpy()
        m = dict(convs)[name]
        t0 = time.perf_counter()
        with torch.no_grad():
            m(inp)
        t_torch = time.perf_counter() - t0
        for backend in backends:
            t0 = time.perf_counter()
            y = loaded[name](inp.numpy(), backend=backend)
            t = time.perf_counter() - t0
            err = float(np.abs(y - ref).max())
            good = err <= 1e-4 * max(1.0, float(np.abs(ref).max()))
            ok &= good
            results.add_row(name, backend, f"[{'green' if good else 'red'}]{err:.2e}",
                            f"{t * 1e3:.2f} ms", f"{t_torch * 1e3:.2f} ms")
    console.print(results)
    unavailable = {b: why for b, why in status.items() if why is not None}
    if unavailable:
        console.print("backends not available here: " +
                      "; ".join(f"{b} ({why})" for b, why in unavailable.items()))
    acc_note = f"torch predictions computed for {len(labels)} digits (untrained demo net)"
    console.print(acc_note)
    console.rule("[green]all sparse layers agree with torch" if ok else "[red]MISMATCH")
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok else 1
