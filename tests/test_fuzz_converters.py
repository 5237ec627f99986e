"""Fuzzing of the converters' untrusted-input boundary (torch checkpoints, .safetensors, ONNX)
and oversized declarations in their headers.

The fuzzers drive the input generators of ``benchmarks/fuzz.py`` (the long-run script) with
Hypothesis: the only outcome besides success is the package's own exception, and whatever
converts is usable (validates, densifies, runs). The size tests run under an address-space
limit a little above what the process uses, so any attempt to allocate what a header
declares fails loudly (MemoryError / allocator error) instead of being refused cleanly.
Inputs the fuzzers once broke are kept below as regression tests.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import resource
import struct
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kepsparse as ks

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("kepsparse_bench_fuzz", ROOT / "benchmarks" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fuzz
_spec.loader.exec_module(fuzz)

# CI runs a few hundred inputs per entry point; KEPSPARSE_FUZZ_EXAMPLES=10000 for a long run
# (or benchmarks/fuzz.py, which also catches segfaults and hangs).
EXAMPLES = int(os.environ.get("KEPSPARSE_FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 300,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@contextlib.contextmanager
def address_space_limit(extra_mb: int = 512):
    """No allocation of more than ``extra_mb`` beyond what the process has mapped now."""
    with open("/proc/self/status") as f:
        vm = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra_mb * 2**20, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def refused(path_or_proto, match: str, cls=ks.KepError):
    """convert() raises ``cls`` matching ``match`` without allocating what is declared."""
    with address_space_limit(), pytest.raises(cls, match=match) as err:
        ks.convert(path_or_proto)
    return err.value


# ----------------------------------------------------------------------------- fuzzers


@pytest.fixture(scope="module")
def entries(tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz-converters")
    out = {}
    for name in ("checkpoint", "safetensors", "onnx"):
        (work / name).mkdir()
        out[name] = fuzz.ENTRY_CLASSES[name](work / name)
    return out


def _fuzz_one(entry, r, tmp_path, suffix):
    path = tmp_path / f"input{suffix}"
    with warnings.catch_warnings():  # the generator's (e.g. torch deprecations), not ours
        warnings.simplefilter("ignore")
        data = entry.make(r)
    path.write_bytes(data)
    try:
        model = ks.convert(path)
    except ks.KepError as exc:
        assert str(path) in str(exc)  # every refusal names the file
        return
    fuzz._exercise_layers(model)


@FUZZ
@given(r=st.randoms(use_true_random=False))
def test_fuzz_torch_checkpoints(entries, tmp_path, r):
    """Random state_dicts (plain, prune weight_orig/weight_mask, wrapped; odd dtypes,
    layouts, views, pickled objects) and zip / pickle / byte mutations of them."""
    entry = entries["checkpoint"]
    _fuzz_one(entry, r, tmp_path, ".pt")
    assert not os.path.exists(entry.marker), "a pickled object's code ran"


@FUZZ
@given(r=st.randoms(use_true_random=False))
def test_fuzz_safetensors(entries, tmp_path, r):
    _fuzz_one(entries["safetensors"], r, tmp_path, ".safetensors")


@FUZZ
@given(r=st.randoms(use_true_random=False))
def test_fuzz_onnx(entries, tmp_path, r):
    _fuzz_one(entries["onnx"], r, tmp_path, ".onnx")


def test_fuzz_script_runs_and_counts(tmp_path):
    """The long-run script end to end on a few inputs (worker process, tally, exit status)."""
    import subprocess
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz.py"), "--entry",
                           "safetensors", "--count", "20", "--seed", "5", "--json", str(out),
                           "--crash-dir", str(tmp_path / "findings")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (res,) = json.loads(out.read_text())["results"]
    assert res["inputs"] == 20 and res["ok"] + res["kep_error"] == 20 and res["ok"] > 0


# ----------------------------------------------------------------------------- torch checkpoints


def _torch_bytes(obj, **kw) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


def _zip_entries(raw: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def _rezip(entries, deflate=()) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in entries:
            z.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED
                       if any(name.endswith(d) for d in deflate) else zipfile.ZIP_STORED)
    return out.getvalue()


def _with_pickle(raw: bytes, old: bytes, new: bytes) -> bytes:
    entries = _zip_entries(raw)
    pkl = next(d for n, d in entries if n.endswith("data.pkl"))
    assert old in pkl
    return _rezip([(n, pkl.replace(old, new) if n.endswith("data.pkl") else d)
                   for n, d in entries])


SMALL = {"c.weight": torch.zeros(2, 2, 3, 3)}  # storage of 36 floats; pickle says numel 36


def test_torch_storage_numel_beyond_record_refused(tmp_path):
    p = tmp_path / "numel.pt"  # the pickle declares a 2**40-element storage over 144 bytes
    p.write_bytes(_with_pickle(_torch_bytes(SMALL), b"K\x24t",
                               b"\x8a\x06" + (2**40).to_bytes(6, "little") + b"t"))
    assert p.stat().st_size < 2048
    refused(p, "numel.pt: cannot read as a PyTorch checkpoint")


def test_torch_tensor_size_beyond_storage_refused(tmp_path):
    p = tmp_path / "size.pt"  # size (2**20, 2**20, 3, 3) over the same 36-float storage
    p.write_bytes(_with_pickle(_torch_bytes(SMALL), b"(K\x02K\x02K\x03K\x03t",
                               b"(J\x00\x00\x10\x00J\x00\x00\x10\x00K\x03K\x03t"))
    refused(p, "size.pt: cannot read as a PyTorch checkpoint")


def test_torch_zero_stride_view_refused_before_copy(tmp_path):
    p = tmp_path / "stride0.pt"  # a 600 MB logical weight over one float, in 1.4 KB
    torch.save({"c.weight": torch.ones(1).expand(4096, 4096, 3, 3)}, p)
    assert p.stat().st_size < 4096
    err = refused(p, r"stride0.pt: field 'c.weight': refused: .* more than the file's")
    assert err.field == "c.weight"


def test_torch_keys_sharing_one_storage_refused(tmp_path):
    w = torch.randn(64, 64, 3, 3)
    p = tmp_path / "shared.pt"  # 200 keys view one 147 KB storage: 29 MB once copied
    torch.save({f"l{i}.weight": w for i in range(200)}, p)
    refused(p, r"shared.pt: field 'l\d+.weight': refused: the tensors up to")


def test_torch_zip_bomb_refused(tmp_path):
    entries = _zip_entries(_torch_bytes(SMALL))
    # a genuine bomb: a 64 MiB record of zeros deflates to ~64 KB
    entries = [(n, bytes(64 << 20) if n.endswith("data/0") else d) for n, d in entries]
    p = tmp_path / "bomb.pt"
    p.write_bytes(_rezip(entries, deflate=("data/0",)))
    assert p.stat().st_size < 256 << 10
    refused(p, r"bomb.pt: refused: the zip's entries unpack to 67,1\d\d,\d\d\d bytes")


def test_torch_zip_declared_size_patched_refused(tmp_path):
    raw = bytearray(_rezip(_zip_entries(_torch_bytes(SMALL)), deflate=("data/0",)))
    name = next(n for n, _ in _zip_entries(bytes(raw)) if n.endswith("data/0")).encode()
    for sig, size_at, name_len_at, name_at in ((b"PK\x01\x02", 24, 28, 46), (b"PK\x03\x04", 22, 26, 30)):
        i = raw.find(sig)
        while i >= 0:
            n = struct.unpack_from("<H", raw, i + name_len_at)[0]
            if bytes(raw[i + name_at:i + name_at + n]) == name:
                struct.pack_into("<I", raw, i + size_at, 3_000_000_000)
            i = raw.find(sig, i + 1)
    p = tmp_path / "patched.pt"
    p.write_bytes(bytes(raw))
    refused(p, "patched.pt: refused: the zip's entries unpack to 3,000,000,")


def test_torch_legacy_format_refused(tmp_path):
    """The legacy (pre-1.6) format allocates each storage at its pickled size before reading."""
    p = tmp_path / "legacy.pt"
    torch.save(SMALL, p, _use_new_zipfile_serialization=False)
    refused(p, "legacy.pt: cannot read as a PyTorch checkpoint: not a zip archive")


@pytest.mark.parametrize("kind, make", [
    ("sparse_coo", lambda: torch.eye(4).reshape(2, 2, 2, 2).to_sparse()),
    ("quantized", lambda: torch.quantize_per_tensor(torch.ones(2, 2, 3, 3), 0.1, 0, torch.qint8)),
    ("meta", lambda: torch.empty(2, 2, 3, 3, device="meta")),
    ("nested", lambda: torch.nested.nested_tensor([torch.ones(2, 3), torch.ones(3, 3)])),
])
def test_torch_non_dense_tensors_refused_naming_key(tmp_path, kind, make):
    p = tmp_path / f"{kind}.pt"
    with warnings.catch_warnings():  # quantized / nested tensors: torch's deprecation notes
        warnings.simplefilter("ignore")
        torch.save({"block.conv.weight": make()}, p)
    err = refused(p, rf"{kind}.pt: field 'block.conv.weight': a {kind} tensor")
    assert isinstance(err, ks.ConvertError)


def test_torch_empty_weight_with_huge_dims_refused(tmp_path):
    p = tmp_path / "empty.pt"  # zero elements, but O = 2**31 would size the row pointers
    torch.save({"c.weight": torch.empty(2**31, 0, 3, 3)}, p)
    refused(p, r"empty.pt: layer 'c': field 'c.weight': weight shape must be 4 positive")


def test_torch_prune_bias_mask_shape_mismatch_refused(tmp_path):
    p = tmp_path / "bm.pt"  # fuzz finding: a NumPy broadcast ValueError escaped
    torch.save({"c.weight": torch.ones(2, 2, 3, 3), "c.bias_orig": torch.ones(2),
                "c.bias_mask": torch.ones(3)}, p)
    refused(p, r"bm.pt: layer 'c': field 'bias_mask': mask shape \(3,\) != bias shape \(2,\)")


def test_torch_pickled_code_in_mask_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    p = tmp_path / "evil.pt"
    torch.save({"c.weight_orig": torch.ones(2, 2, 3, 3),
                "c.weight_mask": fuzz._Payload(str(marker))}, p)
    refused(p, "evil.pt: refused: the checkpoint holds pickled Python objects")
    assert not marker.exists()


# ----------------------------------------------------------------------------- safetensors


def _safetensors(header: dict, payload: bytes, length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + payload


@pytest.mark.parametrize("case, header, length, match", [
    ("huge-shape", {"c.weight": {"dtype": "F32", "shape": [2**20, 2**20, 3, 3],
                                 "data_offsets": [0, 144]}}, None, "cannot read as safetensors"),
    ("overflow", {"c.weight": {"dtype": "F32", "shape": [2**62, 2**62, 1, 1],
                               "data_offsets": [0, 144]}}, None, "cannot read as safetensors"),
    ("offsets-past-end", {"c.weight": {"dtype": "F32", "shape": [2**28, 1, 3, 3],
                                       "data_offsets": [0, 9 * 2**30]}}, None,
     "cannot read as safetensors"),
    ("header-length", {"c.weight": {"dtype": "F32", "shape": [2, 2, 3, 3],
                                    "data_offsets": [0, 144]}}, 2**62, "cannot read as safetensors"),
    ("empty-huge-dims", {"c.weight": {"dtype": "F32", "shape": [2**31, 0, 3, 3],
                                      "data_offsets": [0, 0]}}, None,
     "layer 'c': field 'c.weight': weight shape must be 4 positive"),
])
def test_safetensors_oversized_header_refused(tmp_path, case, header, length, match):
    p = tmp_path / f"{case}.safetensors"
    payload = bytes(144) if header["c.weight"]["data_offsets"][1] else b""
    p.write_bytes(_safetensors(header, payload, length))
    assert p.stat().st_size < 1024
    refused(p, rf"{case}.safetensors: .*{match}")


# ----------------------------------------------------------------------------- ONNX


def _conv_model(w_tensor, extra_nodes=(), extra_inits=(), opset=17, y="y"):
    nodes = [helper.make_node("Conv", ["x", w_tensor.name], ["c"], name="conv", pads=[1, 1, 1, 1]),
             *extra_nodes]
    if not extra_nodes:
        nodes[0].output[0] = y
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                          [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)],
                          [w_tensor, *extra_inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _weight(name="w"):
    w = np.zeros((2, 2, 3, 3), np.float32)
    w[0, 0, 1, 1], w[1, 1, 0, 2] = 1.5, -2.0
    return w, numpy_helper.from_array(w, name)


def _save(tmp_path, name, proto) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(p))
    return p


def test_onnx_initializer_dims_beyond_raw_data_refused(tmp_path):
    _, t = _weight()
    t.dims[:] = [2**20, 2**20, 3, 3]
    p = _save(tmp_path, "dims.onnx", _conv_model(t))
    assert p.stat().st_size < 1024
    refused(p, r"dims.onnx: field 'raw_data': initializer 'w': dims \[1048576, 1048576, 3, 3\] "
               r"need 39,582,418,599,936 bytes, raw_data holds 144")


def test_onnx_initializer_typed_data_short_refused(tmp_path):
    _, t = _weight()
    t.ClearField("raw_data")
    t.float_data.extend([1.0, 2.0, 3.0])
    refused(_save(tmp_path, "short.onnx", _conv_model(t)),
            r"short.onnx: field 'dims': initializer 'w' is unreadable")


def test_onnx_empty_weight_with_huge_dims_refused(tmp_path):
    t = numpy_helper.from_array(np.zeros((0, 2, 3, 3), np.float32), "w")
    t.dims[:] = [2**31, 0, 3, 3]
    refused(_save(tmp_path, "empty.onnx", _conv_model(t)), "empty.onnx: .*weight shape must be")


def test_onnx_constant_node_short_data_refused(tmp_path):
    _, t = _weight()
    c = numpy_helper.from_array(np.ones(4, np.float32), "k")
    c.dims[:] = [2**40]
    node = helper.make_node("Constant", [], ["k"], name="konst", value=c)
    add = helper.make_node("Add", ["c", "k"], ["y"], name="add")
    refused(_save(tmp_path, "konst.onnx", _conv_model(t, [node, add])),
            r"konst.onnx: layer 'konst \(Constant\)': field 'raw_data'")


def _external(t, location, offset=None, length=None):
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", offset), ("length", length)):
        if v is not None:
            e = t.external_data.add()
            e.key, e.value = k, str(v)
    return t


def test_onnx_external_data_in_model_folder_is_read(tmp_path):
    w, t = _weight()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "weights.bin").write_bytes(b"\0" * 16 + w.tobytes())
    p = _save(tmp_path, "m/ext.onnx", _conv_model(_external(t, "weights.bin", 16, w.nbytes)))
    model = ks.convert(p)
    np.testing.assert_array_equal(model["conv"].weight.to_dense(), w)


@pytest.mark.parametrize("location, match", [
    ("../outside.bin", "must be a file name relative to the model's folder"),
    ("/etc/hostname", "must be a file name relative to the model's folder"),
    ("sub/../../outside.bin", "must be a file name relative"),
    ("link.bin", "leads outside the model's folder"),
    ("missing.bin", "does not exist or is not a regular file"),
    (".", "does not exist or is not a regular file"),
])
def test_onnx_external_data_confined_to_model_folder(tmp_path, location, match):
    w, t = _weight()
    (tmp_path / "outside.bin").write_bytes(w.tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "link.bin").symlink_to(tmp_path / "outside.bin")
    p = _save(folder, "m.onnx", _conv_model(_external(t, location)))
    refused(p, rf"m.onnx: field 'external_data': initializer 'w': external data .*{match}")


@pytest.mark.parametrize("offset, length", [(0, 2**40), (2**40, 144), (-4, 144), (0, 140),
                                            (8, 144)])
def test_onnx_external_data_range_must_match_dims(tmp_path, offset, length):
    w, t = _weight()
    (tmp_path / "weights.bin").write_bytes(w.tobytes())  # 144 bytes
    p = _save(tmp_path, "r.onnx", _conv_model(_external(t, "weights.bin", offset, length)))
    refused(p, r"r.onnx: field 'external_data': .* does not hold the 144 bytes of dims")


def test_onnx_external_data_in_memory_proto_refused(tmp_path, monkeypatch):
    """No folder to confine the reference to: refused, not read relative to the cwd."""
    w, t = _weight()
    (tmp_path / "weights.bin").write_bytes(w.tobytes())
    monkeypatch.chdir(tmp_path)
    refused(_conv_model(_external(t, "weights.bin")),
            "<onnx model>: field 'external_data': tensor 'w' has external data")


def test_onnx_folded_constants_share_one_budget(tmp_path):
    """Each folded output is under the per-node cap; together they exceed the budget."""
    _, t = _weight()
    n = 1 << 24  # elements per ConstantOfShape (int8: 16 MiB each); the budget is 2**26 + 36
    nodes, inits = [], [numpy_helper.from_array(np.array([n], np.int64), "shape")]
    for i in range(5):
        nodes.append(helper.make_node("ConstantOfShape", ["shape"], [f"k{i}"], name=f"cos{i}",
                                      value=numpy_helper.from_array(np.array([1], np.int8))))
    nodes.append(helper.make_node("Identity", ["c"], ["y"], name="out"))
    err = refused(_conv_model(t, nodes, inits), r"cos4 \(ConstantOfShape\).*'output'.*budget")
    assert "16,777,216 elements" in str(err)


def test_onnx_unpredictable_fold_not_evaluated(tmp_path):
    """Fuzz finding: a Resize with constant scales in an opset-9 model (shape inference
    cannot size it) was evaluated at 2**32 elements; now it is not folded (and refused as
    an operator the runtime does not run)."""
    _, t = _weight()
    inits = [numpy_helper.from_array(np.ones((1, 1, 4, 4), np.float32), "a"),
             numpy_helper.from_array(np.array([1, 1, 2**14, 2**14], np.float32), "sc")]
    nodes = [helper.make_node("Resize", ["a", "", "sc"], ["r"], name="resize"),
             helper.make_node("Identity", ["c"], ["y"], name="out")]
    refused(_conv_model(t, nodes, inits, opset=9), r"resize \(Resize\).*not supported")


@pytest.mark.parametrize("attrs, field", [
    ({"kernel_shape": 3}, "kernel_shape"),          # fuzz finding: 'int' object is not iterable
    ({"kernel_shape": [3.5, 3.0]}, "kernel_shape"),
    ({"group": [1]}, "group"),                      # fuzz finding: int() of a list
])
def test_onnx_conv_attribute_types_refused(tmp_path, attrs, field):
    _, t = _weight()
    m = _conv_model(t)
    m.graph.node[0].attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
    refused(_save(tmp_path, "a.onnx", m), rf"a.onnx: layer 'conv \(Conv\)': field '{field}'")


def test_onnx_pool_without_kernel_shape_refused(tmp_path):
    _, t = _weight()  # fuzz finding: a KeyError from the pool attribute check
    pool = helper.make_node("MaxPool", ["c"], ["y"], name="pool", strides=[2, 2])
    refused(_save(tmp_path, "p.onnx", _conv_model(t, [pool])),
            r"p.onnx: layer 'pool \(MaxPool\)': field 'kernel_shape'")


def test_onnx_missing_required_input_refused(tmp_path):
    _, t = _weight()  # fuzz finding: Clip("") converted, then failed at run time
    clip = helper.make_node("Clip", ["", "lo"], ["y"], name="clip")
    m = _conv_model(t, [clip], [numpy_helper.from_array(np.float32(0), "lo")])
    refused(_save(tmp_path, "c.onnx", m), r"c.onnx: layer 'clip \(Clip\)': field 'inputs'")


def _attr_case(op, attrs, opset, extra_inputs=()):
    _, t = _weight()
    node = helper.make_node(op, ["c", *extra_inputs], ["y"], name="n")
    node.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
    inits = [numpy_helper.from_array(np.float32(1), n) for n in extra_inputs]
    return _conv_model(t, [node], inits, opset=opset)


@pytest.mark.parametrize("op, attrs, opset, inputs, field", [
    # fuzz findings: float()/int() of a wrong-typed attribute escaped as TypeError/ValueError
    ("Clip", {"max": ""}, 9, (), "max"),
    ("Clip", {"min": numpy_helper.from_array(np.ones(1, np.float32))}, 9, (), "min"),
    ("Pad", {"pads": [0] * 8, "value": numpy_helper.from_array(np.ones(1, np.float32))}, 9, (),
     "value"),
    ("BatchNormalization", {"epsilon": [1e-5]}, 17, ("s", "b", "m", "v"), "epsilon"),
    ("Concat", {"axis": [1]}, 17, (), "axis"),
    ("Softmax", {"axis": 1.5}, 17, (), "axis"),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": 0.0}, 17, (), "strides"),
])
def test_onnx_attribute_of_wrong_type_refused(tmp_path, op, attrs, opset, inputs, field):
    p = _save(tmp_path, "t.onnx", _attr_case(op, attrs, opset, inputs))
    refused(p, rf"t.onnx: layer 'n \({op}\)': field '{field}': attribute '{field}' must be")


def test_onnx_constant_without_output_refused(tmp_path):
    _, t = _weight()  # fuzz finding: IndexError
    k = helper.make_node("Constant", [], [], name="k", value_float=1.0)
    m = _conv_model(t, [k, helper.make_node("Identity", ["c"], ["y"], name="out")])
    refused(_save(tmp_path, "k.onnx", m), r"k.onnx: layer 'k \(Constant\)': field 'outputs'")


def test_onnx_attribute_of_undefined_type_refused(tmp_path):
    _, t = _weight()
    m = _conv_model(t, [helper.make_node("Relu", ["c"], ["y"], name="n")])
    m.graph.node[1].attribute.add(name="alpha", type=0)  # UNDEFINED: onnx cannot read it
    refused(_save(tmp_path, "u.onnx", m), r"u.onnx: layer 'n \(Relu\)': field 'alpha'")


# ------------------------------------------------------- findings outside the converters
# Inputs the fuzzers broke in kepsparse/runtime, geometry.py, formats/base.py and the numba
# kernels (fixed; regression tests).


def _graph_kep(tmp_path) -> tuple[bytes, dict, bytes]:
    p = tmp_path / "g.onnx"
    p.write_bytes(fuzz.onnx_corpus()[0].SerializeToString())
    ks.save(ks.convert(p), tmp_path / "g.kep")
    data = (tmp_path / "g.kep").read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return data, json.loads(data[8:8 + n]), data[8 + n:]


def _write_kep(path, header, payload):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)


def test_fixed_kep_graph_node_op_not_a_string(tmp_path):
    _, header, payload = _graph_kep(tmp_path)
    doc = json.loads(header["__metadata__"]["model"])
    doc["graph"]["nodes"][0]["op"] = []
    header["__metadata__"]["model"] = json.dumps(doc)
    _write_kep(tmp_path / "bad.kep", header, payload)
    with pytest.raises(ks.KepError):
        ks.load(tmp_path / "bad.kep")


@pytest.mark.parametrize("key, value", [("geometry.padding", [float("inf")] * 4),
                                        ("geometry.stride", [float("inf"), 1]),
                                        ("shape", [float("inf"), 3, 3, 3])])
def test_fixed_kep_infinite_numbers(tmp_path, key, value):
    _, header, payload = _graph_kep(tmp_path)
    doc = json.loads(header["__metadata__"]["model"])
    target = doc["layers"][0]
    *parents, leaf = key.split(".")
    for k in parents:
        target = target[k]
    target[leaf] = value
    header["__metadata__"]["model"] = json.dumps(doc)
    _write_kep(tmp_path / "bad.kep", header, payload)
    with pytest.raises(ks.KepError):
        ks.load(tmp_path / "bad.kep")


def test_fixed_runtime_pad_with_huge_constant_pads(tmp_path):
    _, t = _weight()
    pads = numpy_helper.from_array(np.array([0, 0, 2**34, 0, 0, 0, 0, 0], np.int64), "pads")
    pad = helper.make_node("Pad", ["c", "pads"], ["y"], name="pad", mode="constant")
    model = ks.convert(_conv_model(t, [pad], [pads]))
    with pytest.raises(ks.KepError):
        model(np.ones((1, 2, 5, 5), np.float32))


def test_fixed_numba_huge_stride_workspace():
    w, _ = _weight()
    with pytest.raises(ks.InputError, match="stride"):  # beyond int32: refused in make()
        ks.ConvGeometry.make((2**32, 1), 1)
    # within int32 but far beyond the input: refused before any workspace is sized
    layer = ks.SparseConv("c", ks.pack(w, "csr"), None, ks.ConvGeometry.make((2**31 - 1, 1), 1))
    for backend in ("numba", "cpp", "reference"):
        with pytest.raises(ks.InputError, match="stride"):
            layer(np.ones((1, 2, 5, 5), np.float32), backend=backend)


def test_fixed_kep_graph_input_shape_of_booleans(tmp_path):
    """fuzz.py --entry kep --seed 2, input 6047: JSON true is a Python int."""
    _, header, payload = _graph_kep(tmp_path)
    doc = json.loads(header["__metadata__"]["model"])
    doc["graph"]["inputs"][0]["shape"] = [True, 1, 5, 5]
    header["__metadata__"]["model"] = json.dumps(doc)
    _write_kep(tmp_path / "bad.kep", header, payload)
    with pytest.raises(ks.KepFileError, match="malformed shape"):
        ks.load(tmp_path / "bad.kep")


def test_fixed_out_of_memory_in_a_graph_node_is_a_kep_error(tmp_path):
    """fuzz.py --entry kep --seed 2, input 1760: a Pad within the element cap but beyond the
    memory at hand (here an address-space limit) raised MemoryError."""
    import subprocess
    import sys
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc to size the address-space limit")
    _, t = _weight()
    pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 2**13, 2**13], np.int64), "pads")
    pad = helper.make_node("Pad", ["c", "pads"], ["y"], name="pad", mode="constant")
    path = tmp_path / "m.kep"
    ks.save(ks.convert(_conv_model(t, [pad], [pads])), path)
    code = f"""
import re, resource, numpy as np, kepsparse as ks
m = ks.load({str(path)!r})
vm_kb = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
resource.setrlimit(resource.RLIMIT_AS, (vm_kb * 1024 + (256 << 20), resource.RLIM_INFINITY))
try:
    m(np.ones((1, 2, 5, 5), np.float32))  # a (1, 2, 16387, 16387) output: 2 GiB
except ks.InputError as exc:
    print("InputError", exc.layer, exc.field)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "InputError pad memory" in out.stdout
