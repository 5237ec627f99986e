"""Per-layer kernel choice (``registry.select_for``): among sibling kernels that estimate
their cost, the cheapest estimate runs the layer."""
from __future__ import annotations

import numpy as np
import pytest

import kepsparse as ks
from kepsparse.bench.cases import make_weight
from kepsparse.kernels import get, select, select_for


def _cpp_pattern_kernels():
    k = select("pattern", "cpp")
    if k.backend != "cpp":
        pytest.skip("no cpp kernel")
    return k


@pytest.mark.parametrize("structure, plan", [("kep", "grp"), ("random", "o1to"),
                                             ("filter", "o1to")])
def test_pattern_groups_only_where_planes_share_patterns(structure, plan):
    top = _cpp_pattern_kernels()
    fmt = ks.pack(make_weight(structure, 0.9, (64, 64, 3, 3), seed=1), "pattern")
    chosen = select_for(fmt, "auto")
    assert chosen.backend == "cpp" and chosen.isa == top.isa
    assert plan in chosen.name
    assert select_for(fmt, "cpp") is chosen
    assert select_for(fmt, "auto") is chosen  # cached on the format object


def test_a_kernel_name_is_taken_as_it_is():
    top = _cpp_pattern_kernels()
    fmt = ks.pack(make_weight("random", 0.9, (32, 32, 3, 3), seed=2), "pattern")
    assert select_for(fmt, top.name) is get(top.name)


def test_auto_conv2d_equals_reference_whichever_plan_it_picks():
    rng = np.random.default_rng(0)
    for structure in ("kep", "random", "filter"):
        w = make_weight(structure, 0.8, (24, 16, 3, 3), seed=3)
        x = rng.standard_normal((2, 16, 11, 9)).astype(np.float32)
        fmt = ks.pack(w, "pattern")
        np.testing.assert_allclose(ks.conv2d(x, fmt, padding=1, backend="auto"),
                                   ks.conv2d(x, fmt, padding=1, backend="reference"),
                                   rtol=1e-4, atol=1e-5)
