"""Reliability under concurrency, repetition and interruption (issue 8)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import kepsparse as ks
from kepsparse.kernels import all_kernels
from kepsparse.testing import make_kep_weight

BACKENDS = ["auto"] + [k.backend for k in all_kernels() if k.backend != "reference"]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    rng = np.random.default_rng(11)
    m = ks.SparseModel()
    m.add(ks.SparseConv("conv", ks.pack(make_kep_weight(rng, 32, 16, 3, 3), "pattern"),
                        rng.standard_normal(32).astype(np.float32), ks.ConvGeometry.make(1, 1)))
    path = tmp_path_factory.mktemp("rel") / "m.kep"
    ks.save(m, path)
    return ks.load(path)


@pytest.mark.parametrize("backend", sorted(set(BACKENDS)))
def test_eight_threads_equal_serial(loaded, backend):
    layer = loaded["conv"]
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal((2, 16, 20, 18)).astype(np.float32) for _ in range(24)]
    serial = [layer(x, backend=backend) for x in inputs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda x: layer(x, backend=backend), inputs))
    for a, b in zip(serial, parallel):
        assert np.array_equal(a, b)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.parametrize("backend", sorted(set(BACKENDS)))
def test_repeated_calls_do_not_grow_memory(loaded, backend):
    layer = loaded["conv"]
    x = np.random.default_rng(2).standard_normal((1, 16, 12, 12)).astype(np.float32)
    for _ in range(200):  # warm-up: compile, plan caches, allocator pools
        layer(x, backend=backend)
    before = _rss_bytes()
    for _ in range(10_000):
        layer(x, backend=backend)
    grown = _rss_bytes() - before
    assert grown < 5 * 2**20, f"{backend}: resident memory grew {grown / 2**20:.1f} MB"


@pytest.mark.slow
def test_convert_killed_mid_write_keeps_previous_file(tmp_path):
    pytest.importorskip("torch")
    import torch
    ckpt = tmp_path / "big.pt"
    g = torch.Generator().manual_seed(0)
    torch.save({f"l{i}.weight": torch.randn(256, 256, 3, 3, generator=g) for i in range(6)}, ckpt)
    out = tmp_path / "out.kep"
    out.write_bytes(b"the previous good file")
    # the writer stalls after writing half of the new file: we kill it there
    script = textwrap.dedent(f"""
        import os, sys, time, kepsparse.kepfile as kf
        real_fdopen = os.fdopen
        class Stall:
            def __init__(self, f): self.f = f
            def write(self, data):
                self.f.write(data[: len(data) // 2]); self.f.flush()
                print("half written", flush=True); time.sleep(60)
            def __getattr__(self, name): return getattr(self.f, name)
            def __enter__(self): return self
            def __exit__(self, *a): return self.f.__exit__(*a)
        kf.os.fdopen = lambda fd, mode: Stall(real_fdopen(fd, mode))
        from kepsparse.cli import main
        main(["convert", {str(ckpt)!r}, "-o", {str(out)!r}])
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout.readline().strip() == "half written"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert out.read_bytes() == b"the previous good file"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("big.pt", "out.kep")]
    assert all(n.startswith(".out.kep.") and n.endswith(".tmp") for n in leftovers)


def test_huge_input_refused_before_any_copy():
    import tracemalloc
    w = np.zeros((2, 2, 1, 1), np.float32)
    w[0, 0] = 1
    huge = np.broadcast_to(np.float64(1), (1, 2, 40_000, 40_000))  # a view: no memory yet
    tracemalloc.start()
    try:
        with pytest.raises(ks.InputError, match="elements"):
            ks.conv2d(huge, w)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20
