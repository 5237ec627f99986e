"""The ONNX backend node test cases (regenerated offline from onnx.backend.test.case, plus
the pytorch-converted / pytorch-operator / simple model cases shipped in the onnx wheel)
whose operators are all supported: each passes or is refused at convert time with a
kepsparse error naming the node; none gives a wrong answer. Conv cases, whose weights are
graph inputs there, are also run with the weights frozen into initializers."""
from __future__ import annotations

import pytest

from .onnx_node_cases import cases, data_cases, run_case

ALL = list(cases()) + list(data_cases())


def test_the_suite_is_not_empty():
    assert len(ALL) > 150


@pytest.mark.parametrize("case", ALL, ids=[c.name for c in ALL])
def test_node_case(case):
    status, detail = run_case(case)
    assert status in ("pass", "refused"), detail
    if status == "refused":
        assert "layer '" in detail or "graph input" in detail, detail  # names the node
    ops = {n.op_type for n in case.model.graph.node}
    if "Conv" in ops and status == "refused" and len(case.model.graph.input) > 1:
        status, detail = run_case(case, freeze=True)
        assert status in ("pass", "refused"), detail
