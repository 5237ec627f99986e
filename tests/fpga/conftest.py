"""Layer configurations shared by the FPGA tests.

Each configuration is one RTL build (Verilator, 15-25 s cold): keep the set small. Builds are
cached by content in $KEPSPARSE_SIM_CACHE (default ~/.cache/kepsparse/verilator), so a
corrupted copy of a project, or the CLI run on the same layer, reuses its build.
"""
from __future__ import annotations

import numpy as np
import pytest

from kepsparse.formats import pack
from kepsparse.geometry import ConvGeometry
from kepsparse.model import SparseConv, SparseModel
from kepsparse.testing import make_kep_weight

# name: (O, C, K, stride, padding, input HxW, P, relu, empty filters, dense filters)
CONFIGS = {
    "s1p1_P1": dict(O=4, C=3, K=3, stride=1, padding=1, hw=(6, 6), P=1, relu=False,
                    empty=[1], dense=[3]),
    "s2p0_P8": dict(O=6, C=4, K=3, stride=2, padding=0, hw=(9, 9), P=8, relu=False,
                    empty=[0], dense=[4]),
    "s1p0_P4_relu_tail": dict(O=5, C=3, K=3, stride=1, padding=0, hw=(7, 5), P=4, relu=True,
                              empty=[2], dense=[0]),
}


def make_model(name: str, seed: int = 7) -> tuple[SparseModel, np.ndarray]:
    """A one-layer model for configuration ``name`` and its calibration inputs."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(seed)
    O, C, K = cfg["O"], cfg["C"], cfg["K"]
    w = make_kep_weight(rng, O, C, K, K, keep_per_plane=4, n_patterns=4, empty_planes=0.25)
    for o in cfg["empty"]:
        w[o] = 0
    for o in cfg["dense"]:
        d = rng.standard_normal((C, K, K)).astype(np.float32)
        d[np.abs(d) < 0.05] = 0.05
        w[o] = d
    bias = (rng.standard_normal(O) * 0.3).astype(np.float32)
    model = SparseModel()
    model.add(SparseConv(name, pack(w, "pattern"), bias,
                         ConvGeometry.make(cfg["stride"], cfg["padding"])))
    calibration = rng.standard_normal((4, C, *cfg["hw"])).astype(np.float32)
    return model, calibration


@pytest.fixture(scope="session")
def projects(tmp_path_factory):
    """Generated projects of every configuration (generated once per session)."""
    from kepsparse.fpga import generate_project
    root = tmp_path_factory.mktemp("hls")
    out = {}
    for name, cfg in CONFIGS.items():
        model, cal = make_model(name)
        generate_project(model, name, root / name, parallelism=cfg["P"], calibration=cal,
                         relu=cfg["relu"])
        out[name] = root / name
    return out
