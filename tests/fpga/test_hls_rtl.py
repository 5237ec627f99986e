"""Generated projects: HLS C simulation (g++) and RTL simulation (Verilator + cocotb) are
bit-exact with the golden model; a corrupted weight is caught by both; cycle targets hold."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from kepsparse.fpga import load_golden, load_project, run_csim, run_sim
from kepsparse.fpga.project import load_vectors

from .conftest import CONFIGS

pytestmark = []


def test_project_files_and_golden_vectors(projects):
    for name, d in projects.items():
        desc = load_project(d)
        for f in ("kep_conv.h", "layer_config.h", "weights.h", "kernel.cpp", "kernel.h", "tb.cpp",
                  "run_hls.tcl", "README.md", "data/input.dat", "data/golden.dat",
                  "rtl/kep_sparse_conv.v", "rtl/rom_values.mem", "tb/test_kep_layer.py"):
            assert (d / f).is_file(), f
        assert "#pragma HLS" in (d / "kep_conv.h").read_text()
        assert "csim_design" in (d / "run_hls.tcl").read_text()
        assert f"static const int P = {CONFIGS[name]['P']};" in (d / "layer_config.h").read_text()
        x, y = load_vectors(d)
        np.testing.assert_array_equal(load_golden(d).run(x[None])[0], y)
        nnz = np.array(desc["nnz_per_filter"])
        assert nnz[CONFIGS[name]["empty"]].sum() == 0           # an empty filter
        assert (nnz[CONFIGS[name]["dense"]] == desc["C"] * desc["KH"] * desc["KW"]).all()
        assert desc["ideal_cycles"] == nnz.sum() * -(-desc["HO"] * desc["WO"] // desc["P"])


@pytest.mark.csim
@pytest.mark.parametrize("name", list(CONFIGS))
def test_csim_bit_exact(projects, name):
    r = run_csim(projects[name])
    assert r["bit_exact"], r["log"]
    assert r["outputs"] == CONFIGS[name]["O"] * np.prod(load_vectors(projects[name])[1].shape[1:])


@pytest.mark.verilator
@pytest.mark.parametrize("name", list(CONFIGS))
def test_rtl_bit_exact_and_cycles(projects, name):
    r = run_sim(projects[name], random_runs=2)
    assert r["bit_exact"], r
    assert r["outputs_compared"] == 3 * \
        CONFIGS[name]["O"] * np.prod(load_vectors(projects[name])[1].shape[1:])
    desc = load_project(projects[name])
    print(f"{name}: cycles {r['cycles']} ideal {r['ideal_cycles']} dense {r['dense_cycles']} "
          f"density {desc['density']:.3f}")
    assert r["cycles"] <= 1.1 * r["ideal_cycles"]
    assert r["dense_cycles"] / r["cycles"] >= 0.9 / desc["density"]


def _corrupt(src, dst):
    """Copy a project and change one stored weight in both the C++ ROM and the RTL ROM."""
    shutil.copytree(src, dst)
    weights = (dst / "weights.h").read_text()
    m = re.search(r"(static const int8_t VALUES\[\d+\] = \{\n    )(-?\d+)", weights)
    old = int(m.group(2))
    new = -old if old != 0 else 100
    (dst / "weights.h").write_text(weights[:m.start(2)] + str(new) + weights[m.end(2):])
    mem = (dst / "rtl" / "rom_values.mem").read_text().splitlines()
    assert int(mem[0], 16) == old & 0xFF
    mem[0] = f"{new & 0xFF:02x}"
    (dst / "rtl" / "rom_values.mem").write_text("\n".join(mem) + "\n")


@pytest.mark.csim
def test_csim_catches_a_corrupted_weight(projects, tmp_path):
    bad = tmp_path / "bad"
    _corrupt(projects["s1p1_P1"], bad)
    r = run_csim(bad)
    assert not r["bit_exact"] and r["mismatches"] > 0
    assert "mismatch" in r["log"]


@pytest.mark.verilator
def test_rtl_sim_catches_a_corrupted_weight(projects, tmp_path):
    bad = tmp_path / "bad"
    _corrupt(projects["s1p1_P1"], bad)
    r = run_sim(bad, random_runs=0)
    assert r["build_cached"]            # same RTL and parameters: the build is reused
    assert not r["bit_exact"] and r["mismatches"] > 0
    assert json.loads((bad / "sim_report.json").read_text())["mismatches"] == r["mismatches"]
