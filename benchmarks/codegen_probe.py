"""Probe: would code generated per layer beat the pattern-group kernel? (session 8)

Session 3 concluded that the group kernel is bound by its memory operations and that going
further "needs a different kernel shape (e.g. code generated per layer)". This script
measures that shape on one 3x3 stride-1 layer: it writes a C++ function in which every
stored weight is a constant and a block of OB output channels x V pixel vectors stays in
registers for the whole input (each input vector is loaded once per block and feeds the
FMAs of the block's channels that keep that position), compiles it with g++, and times it
against kepsparse's bound call on the same weights, both on one thread.

    python benchmarks/codegen_probe.py --channels 16 16 --size 32 --ob 16 --v 1

The generated function reads an input already padded (row pitch W + 2) and writes wide
output rows: no packing and no epilogue, so its time is a lower bound for such a kernel;
kepsparse's includes both. Prints compile time, source lines, the error against the
reference kernel and min / median microseconds; exits with an error if the generated code's output differs from
the reference. Needs g++ with AVX-512F and an AVX-512 CPU.
Nothing is kept: the source and library go to a temporary folder.
"""
from __future__ import annotations

import argparse
import ctypes
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import kepsparse
from kepsparse.bench.cases import make_weight
from kepsparse.conv import bind_prepared, prepared_for
from kepsparse.formats import pack
from kepsparse.geometry import ConvGeometry
from kepsparse.kernels import registry


def generate(w: np.ndarray, H: int, W: int, OB: int, V: int) -> tuple[str, int]:
    """C++ source of `layer(x, y, nvec)`: y (O planes of nvec*16*V floats) = conv(x), x padded
    by 1 (planes of (H+2) x (W+2)). Returns (source, floats per output plane)."""
    O, C = w.shape[:2]
    Wr, PS = W + 2, (H + 2) * (W + 2)
    nvec = -(-H * Wr // (16 * V))
    plane = nvec * 16 * V
    out = ["#include <immintrin.h>",
           'extern "C" void layer(const float* __restrict x, float* __restrict y, long nvec) {',
           "  for (long v = 0; v < nvec; ++v) {",
           f"    const float* xb = x + v * {16 * V}; float* yb = y + v * {16 * V};"]
    for b0 in range(0, O, OB):
        outs = list(range(b0, min(O, b0 + OB)))
        out.append("    {")
        out += [f"      __m512 a{i}_{j} = _mm512_setzero_ps();"
                for i in range(len(outs)) for j in range(V)]
        for c in range(C):
            for k in range(9):
                users = [(i, float(w[o, c, k // 3, k % 3])) for i, o in enumerate(outs)
                         if w[o, c, k // 3, k % 3] != 0]
                if not users:
                    continue
                off = c * PS + (k // 3) * Wr + k % 3
                out.append("      {")
                out += [f"        const __m512 x{j} = _mm512_loadu_ps(xb + {off + 16 * j});"
                        for j in range(V)]
                for i, wv in users:
                    out.append(f"        {{ const __m512 wb = _mm512_set1_ps({wv.hex()}f);")
                    out += [f"          a{i}_{j} = _mm512_fmadd_ps(x{j}, wb, a{i}_{j});"
                            for j in range(V)]
                    out.append("        }")
                out.append("      }")
        out += [f"      _mm512_storeu_ps(yb + {o * plane + 16 * j}, a{i}_{j});"
                for i, o in enumerate(outs) for j in range(V)]
        out.append("    }")
    out += ["  }", "}"]
    return "\n".join(out), plane


def timed(f, calls: int) -> tuple[float, float]:
    for _ in range(50):
        f()
    ts = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        f()
        ts[i] = time.perf_counter() - t0
    return ts.min() * 1e6, float(np.median(ts)) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, nargs=2, metavar=("C", "O"), default=(16, 16))
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--ob", type=int, default=16, help="output channels held in registers")
    ap.add_argument("--v", type=int, default=1, help="pixel vectors (16 floats) per block")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    (C, O), H = args.channels, args.size
    W = H
    w = make_weight("kep", args.sparsity, (O, C, 3, 3), 0)
    x = np.random.default_rng(0).standard_normal((1, C, H, W)).astype(np.float32)
    src, plane = generate(w, H, W, args.ob, args.v)
    with tempfile.TemporaryDirectory() as tmp:
        cpp, so = Path(tmp) / "layer.cpp", Path(tmp) / "layer.so"
        cpp.write_text(src)
        t0 = time.perf_counter()
        subprocess.run(["g++", "-O2", "-mavx512f", "-mfma", "-shared", "-fPIC", str(cpp), "-o",
                        str(so)], check=True)
        compile_s = time.perf_counter() - t0
        lib = ctypes.CDLL(str(so))
    lib.layer.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
    Wr, PS = W + 2, (H + 2) * (W + 2)
    nvec = plane // (16 * args.v)
    xp = np.zeros(C * PS + plane + 64, np.float32)  # slack: the last vectors read past
    xp[:C * PS].reshape(C, H + 2, Wr)[:, 1:H + 1, 1:W + 1] = x[0]
    y = np.zeros(O * plane, np.float32)
    lib.layer(xp.ctypes.data, y.ctypes.data, nvec)
    got = y.reshape(O, plane)[:, :H * Wr].reshape(O, H, Wr)[:, :, :W]
    fmt = pack(w, "pattern")
    ref = kepsparse.conv2d(x, fmt, None, 1, 1, backend="reference")[0]
    err = float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-30))
    if not err <= 1e-5:  # the generated code must compute the layer before it is timed
        raise SystemExit(f"generated code is wrong: max error {err:.2e} of max |y|")
    xa, ya = xp.ctypes.data, y.ctypes.data
    t_gen = timed(lambda: lib.layer(xa, ya, nvec), args.calls)
    geometry = ConvGeometry.make(stride=1, padding=1)
    kernel = registry.select_for(fmt, "auto")
    bound = bind_prepared(kernel, prepared_for(fmt, kernel), fmt, x.shape, None, geometry, 1)
    t_ks = timed(lambda: bound(x, False), args.calls)
    flops = 2.0 * np.count_nonzero(w) * H * W
    print(f"{C}->{O} {H}x{W} KEP {args.sparsity:g}, OB={args.ob} V={args.v}: "
          f"compile {compile_s:.2f} s, {src.count(chr(10)) + 1} lines, rel. error {err:.1e}")
    print(f"  generated: min {t_gen[0]:.1f} us, median {t_gen[1]:.1f} us "
          f"({flops / t_gen[0] / 1e3:.0f} useful GFLOP/s)")
    print(f"  kepsparse {kernel.name} (bound call, 1 thread): min {t_ks[0]:.1f} us, "
          f"median {t_ks[1]:.1f} us ({flops / t_ks[0] / 1e3:.0f} useful GFLOP/s)")


if __name__ == "__main__":
    main()
