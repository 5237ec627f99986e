"""``kepsparse hls generate``: one sparse conv layer -> a self-contained accelerator project.

Project folder (DIR):
    project.json         layer description, engine parameters, quantization, cycle model
    golden.npz           the golden model's integer parameters + the test vectors
    kep_conv.h           engine (static template)      tb.cpp     C testbench (static)
    layer_config.h       config struct (rendered)      kernel.cpp/.h   top function (rendered)
    weights.h            ROM arrays (from the PatternFormat's arrays, no second packer)
    run_hls.tcl          Vitis HLS csim / csynth / cosim
    data/input.dat       int8 input (C, H, W), one decimal per line
    data/golden.dat      int8 golden output (O, HO, WO), one decimal per line
    rtl/kep_sparse_conv.v   RTL engine (static);  rtl/rom_*.mem  its ROMs ($readmemh hex)
    tb/test_kep_layer.py    cocotb testbench (static)
    README.md
"""
from __future__ import annotations

import json
import re
import shutil
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError, KepError, UnsupportedError
from ..formats import PatternFormat
from ..geometry import ConvGeometry
from ..model import SparseConv, SparseModel
from .quant import QuantLayer, check_supported, quantize_layer
from .templates import render, template_path

PROJECT_FILE = "project.json"
GOLDEN_FILE = "golden.npz"
MAX_PARALLELISM = 64
MAX_KERNEL_POSITIONS = 64   # pattern masks are at most 64 bits (uint64 in C++)
RTL_COUNTER_MAX = 0xFFFF    # hls/rtl/kep_sparse_conv.v: o, t, c, lane_oh/ow, out_o, out_t are 16-bit
DEFAULT_PARALLELISM = 4
DEFAULT_INPUT_HW = (8, 8)
TOP_FUNCTION = "kep_layer"


def check_parallelism(p) -> int:
    """P as an int: an int, an integer-valued number or an int-like string (``"4"``);
    4.5 or ``"four"`` is refused."""
    try:
        value = int(p)
        exact = isinstance(p, str) or value == p
    except (TypeError, ValueError, OverflowError):
        exact = False
    if not exact or isinstance(p, bool):
        raise InputError(f"parallelism must be an integer 1..{MAX_PARALLELISM}, got {p!r}",
                         field="parallelism")
    if not 1 <= value <= MAX_PARALLELISM:
        raise InputError(f"parallelism P={value} is out of range: choose 1..{MAX_PARALLELISM} "
                         "parallel MACs (--parallelism)", field="parallelism")
    return value


def check_counter_widths(layer_name: str, **sizes) -> None:
    """The RTL engine counts filters, channels, output rows/columns and tiles in 16-bit
    registers (o, c, lane_oh/ow, t, out_o, out_t): refuse sizes that would wrap."""
    for name, v in sizes.items():
        if int(v) > RTL_COUNTER_MAX:
            raise UnsupportedError(f"{name}={int(v)} exceeds the RTL's 16-bit counters",
                                   layer=layer_name, field=name)


def ideal_cycles(nnz_per_filter, npix: int, p: int) -> int:
    """sum_o nnz_o * ceil(npix / P): one cycle per non-zero per tile."""
    return int(np.sum(nnz_per_filter)) * (-(-npix // p))


def dense_cycles(shape, npix: int, p: int) -> int:
    """A dense engine with the same P visits every weight: O*C*KH*KW * ceil(npix / P)."""
    return int(np.prod(shape)) * (-(-npix // p))


def rom_sizes(fmt: PatternFormat, n_filters: int) -> dict:
    kk = fmt.shape[2] * fmt.shape[3]
    return {"plane_ids": int(fmt.plane_ids.nbytes), "patterns": fmt.n_patterns * -(-kk // 8),
            "values": fmt.nnz, "bias": 4 * n_filters, "mult": 4 * n_filters, "shift": n_filters}


def _layer_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name) or "layer"


def _pattern_words(fmt: PatternFormat) -> list[int]:
    """Each library row as an integer mask, bit kh*KW+kw (the row-major positions)."""
    flat = fmt.patterns.reshape(fmt.n_patterns, -1).astype(np.uint64)
    weights = np.left_shift(np.uint64(1), np.arange(flat.shape[1], dtype=np.uint64))
    return [int(v) for v in (flat * weights).sum(axis=1)]


def _c_array(ctype: str, name: str, values, per_line: int = 16, suffix: str = "") -> str:
    vals = [f"{int(v)}{suffix}" for v in values]
    lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)]
    return (f"static const {ctype} {name}[{len(vals)}] = {{\n    "
            + ",\n    ".join(lines) + "\n};\n")


def _mem(values, digits: int) -> str:
    mask = (1 << (4 * digits)) - 1
    return "".join(f"{int(v) & mask:0{digits}x}\n" for v in values)


def resolve_layer(model: SparseModel, layer_name: str, stride=None, padding=None) -> SparseConv:
    if layer_name not in model.layers:
        raise InputError(f"no layer {layer_name!r}; layers: {', '.join(model.layers)}",
                         layer=layer_name, field="layer")
    layer = model[layer_name]
    geometry = layer.geometry
    if stride is not None or padding is not None:
        base = geometry or ConvGeometry()
        geometry = ConvGeometry.make(base.stride if stride is None else stride,
                                     base.padding if padding is None else padding,
                                     base.dilation, base.groups)
    if geometry is None:
        raise InputError("stride/padding were not recorded in the source (a bare state_dict); "
                         "pass --stride and --padding", layer=layer_name, field="geometry")
    check_supported(geometry, layer_name)
    return SparseConv(layer.name, layer.weight, layer.bias, geometry)


def default_calibration(layer: SparseConv, input_hw=None, seed: int = 0, n: int = 4):
    """Synthetic calibration inputs when none are given: standard normal (n, C, H, W)."""
    h, w = input_hw or DEFAULT_INPUT_HW
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, layer.shape[1], int(h), int(w))).astype(np.float32)


def load_calibration(path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise InputError("calibration file not found", field="calibration").located(path=path)
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"not a .npy array: {exc}", field="calibration").located(path=path) from None
    return x


def generate_project(model: SparseModel, layer_name: str, outdir, parallelism: int = DEFAULT_PARALLELISM,
                     calibration=None, relu: bool = False, input_hw=None, stride=None,
                     padding=None, seed: int = 0, source: str = "model") -> dict:
    """Write the project for ``layer_name`` into ``outdir``; returns the project description."""
    P = check_parallelism(parallelism)
    layer = resolve_layer(model, layer_name, stride, padding)
    O, C, KH, KW = layer.shape
    if KH * KW > MAX_KERNEL_POSITIONS:
        raise UnsupportedError(f"kernel {KH}x{KW} has more than {MAX_KERNEL_POSITIONS} positions",
                               layer=layer_name, field="shape")
    check_counter_widths(layer_name, O=O, C=C)
    if calibration is None:
        calibration = default_calibration(layer, input_hw, seed)
    cal_shape = np.shape(calibration)
    if len(cal_shape) in (3, 4):  # check before quantizing a huge input (quantize checks the rest)
        Ho, Wo = layer.geometry.output_size(int(cal_shape[-2]), int(cal_shape[-1]), KH, KW)
        check_counter_widths(layer_name, Ho=Ho, Wo=Wo, tiles=-(-Ho * Wo // P))
    q = quantize_layer(layer.name, layer.weight, layer.bias, layer.geometry, calibration, relu=relu)
    Ho, Wo = q.output_hw
    check_counter_widths(layer_name, Ho=Ho, Wo=Wo, tiles=-(-Ho * Wo // P))
    x_float = np.asarray(calibration, np.float32)
    x_float = x_float[None] if x_float.ndim == 3 else x_float
    xq = q.quantize_input(x_float[:1])            # the stored test vector: first sample
    yq = q.run(xq)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "rtl", "tb"):
        (out / sub).mkdir(exist_ok=True)
    desc = describe(q, P, source=source)
    desc["error_vs_float"] = q.error_report(x_float)
    _write_files(out, q, desc, xq[0], yq[0])
    return desc


def describe(q: QuantLayer, P: int, source: str = "model") -> dict:
    fmt = q.weight
    O, C, KH, KW = fmt.shape
    _, H, W = q.input_shape
    HO, WO = q.output_hw
    pt, pb, pl, pr = q.geometry.padding
    nnz = q.nnz_per_filter()
    roms = rom_sizes(fmt, O)
    return {
        "kepsparse_version": __version__, "layer": q.name, "layer_id": _layer_id(q.name),
        "source": source, "top": TOP_FUNCTION,
        "C": C, "H": H, "W": W, "O": O, "KH": KH, "KW": KW,
        "SH": q.geometry.stride[0], "SW": q.geometry.stride[1],
        "PT": pt, "PB": pb, "PL": pl, "PR": pr, "HO": HO, "WO": WO, "P": P, "relu": q.relu,
        "ID_BITS": fmt.bits_per_id, "NPAT": fmt.n_patterns, "NNZ": fmt.nnz,
        "NPB": int(fmt.plane_ids.nbytes),
        "nnz_per_filter": nnz.tolist(), "density": fmt.nnz / fmt.size,
        "tiles": -(-HO * WO // P),
        "ideal_cycles": ideal_cycles(nnz, HO * WO, P),
        "dense_cycles": dense_cycles(fmt.shape, HO * WO, P),
        "rom_bytes": sum(roms.values()), "rom_bytes_detail": roms,
        "quant": {"x_scale": q.x_scale, "y_scale": q.y_scale, "w_scale": q.w_scale.tolist(),
                  "bias_q": q.bias_q.tolist(), "mult": q.mult.tolist(), "shift": q.shift.tolist()},
    }


def rtl_parameters(desc: dict) -> dict:
    """The Verilog parameters of kep_sparse_conv for this project."""
    p = {k: desc[k] for k in ("P", "C", "H", "W", "O", "KH", "KW", "SH", "SW", "PT", "PL",
                              "HO", "WO", "NPAT", "NPB")}
    p["IDB"] = desc["ID_BITS"]
    p["NNZ"] = max(desc["NNZ"], 1)
    p["RELU"] = int(desc["relu"])
    return p


def _write_files(out: Path, q: QuantLayer, desc: dict, xq: np.ndarray, yq: np.ndarray) -> None:
    fmt = q.weight
    values = fmt.values.astype(np.int8)   # the format's value order, int8 weights
    patterns = _pattern_words(fmt)
    kk = desc["KH"] * desc["KW"]
    # --- golden model parameters and vectors
    np.savez(out / GOLDEN_FILE, input=xq, golden=yq, **{f"fmt_{k}": v for k, v in fmt.arrays().items()},
             shape=np.array(fmt.shape), bias_q=q.bias_q, mult=q.mult, shift=q.shift,
             w_scale=q.w_scale, padding=np.array(q.geometry.padding),
             stride=np.array(q.geometry.stride), relu=np.array(q.relu),
             scales=np.array([q.x_scale, q.y_scale]))
    (out / "data" / "input.dat").write_text("".join(f"{int(v)}\n" for v in xq.reshape(-1)))
    (out / "data" / "golden.dat").write_text("".join(f"{int(v)}\n" for v in yq.reshape(-1)))
    # --- HLS C++
    for name in ("kep_conv.h", "tb.cpp"):
        shutil.copyfile(template_path(f"cpp/{name}"), out / name)
    fields = dict(desc, layer=q.name, RELU="true" if q.relu else "false")
    (out / "layer_config.h").write_text(render("cpp/layer_config.h.in", **fields))
    (out / "kernel.h").write_text(render("cpp/kernel.h.in", **fields))
    (out / "kernel.cpp").write_text(render(
        "cpp/kernel.cpp.in", **fields, XSIZE=desc["C"] * desc["H"] * desc["W"],
        YSIZE=desc["O"] * desc["HO"] * desc["WO"], XPART=desc["P"]))
    weights = ["// weights.h -- generated ROM arrays of layer '%s' (KEP pattern layout, from\n"
               "// kepsparse.formats.PatternFormat: plane_ids and patterns as stored, values\n"
               "// quantized to int8 in the format's order). Do not edit: regenerate.\n"
               "#ifndef KEP_WEIGHTS_H\n#define KEP_WEIGHTS_H\n#include <cstdint>\n\n" % q.name,
               _c_array("uint8_t", "PLANE_IDS", fmt.plane_ids),
               _c_array("uint64_t", "PATTERNS", patterns, per_line=6, suffix="ull"),
               _c_array("int8_t", "VALUES", values if len(values) else [0]),
               _c_array("int32_t", "BIAS", q.bias_q, per_line=8),
               _c_array("int32_t", "MULT", q.mult, per_line=8),
               _c_array("uint8_t", "SHIFT", q.shift),
               "\n#endif  // KEP_WEIGHTS_H\n"]
    (out / "weights.h").write_text("".join(weights))
    (out / "run_hls.tcl").write_text(render("tcl/run_hls.tcl.in", **fields, part="xc7z020clg400-1",
                                            clock_ns=10))
    # --- RTL
    shutil.copyfile(template_path("rtl/kep_sparse_conv.v"), out / "rtl" / "kep_sparse_conv.v")
    rtl = out / "rtl"
    (rtl / "rom_plane_ids.mem").write_text(_mem(fmt.plane_ids, 2))
    (rtl / "rom_patterns.mem").write_text(_mem(patterns, -(-kk // 4)))
    (rtl / "rom_values.mem").write_text(_mem(values if len(values) else [0], 2))
    (rtl / "rom_bias.mem").write_text(_mem(q.bias_q, 8))
    (rtl / "rom_mult.mem").write_text(_mem(q.mult, 8))
    (rtl / "rom_shift.mem").write_text(_mem(q.shift, 2))
    shutil.copyfile(template_path("cocotb/test_kep_layer.py"), out / "tb" / "test_kep_layer.py")
    # --- description + README
    desc["rtl_parameters"] = rtl_parameters(desc)
    (out / PROJECT_FILE).write_text(json.dumps(desc, indent=2) + "\n")
    pad = desc["PT"], desc["PB"], desc["PL"], desc["PR"]
    fields.update(version=__version__, nnz=desc["NNZ"], density_pct=f"{100 * desc['density']:.1f}",
                  padding=pad, x_scale=f"{q.x_scale:.6g}", y_scale=f"{q.y_scale:.6g}", relu=q.relu)
    (out / "README.md").write_text(render("README.md.in", **fields))


def load_project(directory) -> dict:
    """The project description of a generated folder, or a KepError naming what is wrong."""
    d = Path(directory)
    f = d / PROJECT_FILE
    if not f.is_file():
        raise InputError(f"not a generated project (no {PROJECT_FILE}); create one with "
                         "`kepsparse hls generate MODEL.kep --layer NAME -o DIR`",
                         field="project").located(path=d)
    try:
        desc = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise KepError(f"unreadable: {exc}", path=f) from None
    desc["dir"] = str(d.resolve())
    return desc


def _read_golden(directory, keys) -> dict:
    """The arrays ``keys`` of a project's golden.npz, or an InputError naming the file."""
    path = Path(directory) / GOLDEN_FILE
    if not path.is_file():
        raise InputError(f"{GOLDEN_FILE} is missing: regenerate the project with "
                         "`kepsparse hls generate`", field="golden").located(path=path)
    try:
        with open(path, "rb") as fh:
            z = np.load(fh, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            with z:
                arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError) as exc:
        raise InputError(f"corrupt or not an .npz file: {exc}", field="golden").located(path=path) from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise InputError(f"corrupt: missing array(s) {', '.join(missing)}",
                         field=missing[0]).located(path=path)
    return arrays


GOLDEN_KEYS = ("input", "golden", "shape", "padding", "stride", "scales", "w_scale", "bias_q",
               "mult", "shift", "relu")


def load_golden(directory) -> QuantLayer:
    """Rebuild the golden model (QuantLayer) of a project from golden.npz."""
    d = Path(directory)
    arrays = _read_golden(d, GOLDEN_KEYS)
    try:
        shape = tuple(int(v) for v in arrays["shape"])
        fmt = PatternFormat.from_arrays(shape, {k[4:]: v for k, v in arrays.items() if k.startswith("fmt_")})
        pad = tuple(int(v) for v in arrays["padding"])
        geometry = ConvGeometry.make(tuple(int(v) for v in arrays["stride"]), pad)
        x_scale, y_scale = (float(v) for v in arrays["scales"])
        xin = arrays["input"]
        return QuantLayer(name=str(d.name), weight=fmt, geometry=geometry,
                          input_shape=tuple(int(v) for v in xin.shape), w_scale=arrays["w_scale"],
                          x_scale=x_scale, y_scale=y_scale, bias_q=arrays["bias_q"],
                          mult=arrays["mult"], shift=arrays["shift"], relu=bool(arrays["relu"]))
    except KepError as exc:
        raise exc.located(path=d / GOLDEN_FILE)
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"corrupt golden model: {exc}", field="golden").located(
            path=d / GOLDEN_FILE) from None


def load_vectors(directory) -> tuple[np.ndarray, np.ndarray]:
    """The stored (input, golden output) test vectors of a project."""
    arrays = _read_golden(directory, ("input", "golden"))
    return arrays["input"], arrays["golden"]
