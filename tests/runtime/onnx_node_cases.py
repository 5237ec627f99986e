"""Run the ONNX backend node test cases (regenerated offline from ``onnx.backend.test.case``)
for the operators the runtime supports. Each case either passes or is refused at convert
time with a kepsparse error; ``python tests/runtime/onnx_node_cases.py`` prints the table
and writes the refusal list used in docs/onnx_support.md.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np

SUPPORTED = {"Conv", "BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "MaxPool",
             "AveragePool", "GlobalAveragePool", "Add", "Mul", "Concat", "Flatten", "Reshape",
             "Gemm", "MatMul", "Softmax", "Identity", "Constant", "Pad", "Slice"}


@lru_cache(maxsize=None)
def cases():
    from onnx.backend.test.case import node
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        all_cases = node.collect_testcases(None) if "op_type" in \
            node.collect_testcases.__code__.co_varnames else node.collect_testcases()
    out = []
    for c in all_cases:
        ops = {n.op_type for n in c.model.graph.node}
        if ops and ops <= SUPPORTED and ops & (SUPPORTED - {"Constant", "Identity"}) | ops:
            out.append(c)
    return sorted(out, key=lambda c: c.name)


DATA_SUITES = ("pytorch-converted", "pytorch-operator", "simple")


class _DirCase:
    """A case stored as files in the onnx wheel (backend/test/data/<suite>/<name>)."""

    rtol, atol = 1e-3, 1e-7

    def __init__(self, suite, folder):
        import onnx
        self.name = f"{suite}/{folder.name}"
        self.folder = folder
        self.model = onnx.load(str(folder / "model.onnx"))

    @property
    def data_sets(self):
        import onnx
        from onnx import numpy_helper
        sets = []
        for d in sorted(self.folder.glob("test_data_set_*")):
            def read(prefix):
                arrs = []
                for f in sorted(d.glob(f"{prefix}_*.pb"), key=lambda p: int(p.stem.split("_")[1])):
                    t = onnx.TensorProto()
                    t.ParseFromString(f.read_bytes())
                    arrs.append(numpy_helper.to_array(t))
                return arrs
            sets.append((read("input"), read("output")))
        return sets


@lru_cache(maxsize=None)
def data_cases():
    from pathlib import Path

    import onnx
    root = Path(onnx.__file__).parent / "backend" / "test" / "data"
    out = []
    for suite in DATA_SUITES:
        for folder in sorted((root / suite).glob("test_*")):
            if not (folder / "model.onnx").exists():
                continue
            c = _DirCase(suite, folder)
            ops = {n.op_type for n in c.model.graph.node}
            if ops and ops <= SUPPORTED and c.data_sets:
                out.append(c)
    return out


def freeze_inputs(model, data_inputs):
    """A copy of ``model`` whose inputs after the first are initializers (Conv weights are
    graph inputs in the node tests; kepsparse needs them constant)."""
    import onnx
    from onnx import numpy_helper
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    keep = g.input[0]
    frozen = list(g.input[1:])
    for vi, arr in zip(frozen, data_inputs[1:]):
        g.initializer.append(numpy_helper.from_array(np.asarray(arr), vi.name))
    del g.input[:]
    g.input.append(keep)
    return m


def run_case(case, model=None, data=None, freeze=False):
    """('pass' | 'refused' | 'WRONG', detail)."""
    import kepsparse as ks
    model = case.model if model is None else model
    inputs, expected = (case.data_sets[0] if data is None else data)
    if freeze:
        model = freeze_inputs(model, inputs)
        inputs = inputs[:1]
    try:
        m = ks.convert(model)
    except ks.KepError as exc:
        return "refused", str(exc).split(": ", 1)[-1] if False else str(exc)
    try:
        with np.errstate(all="ignore"):
            got = m(*inputs)
    except ks.KepError as exc:
        return "WRONG", f"runtime error after a successful convert: {exc}"
    if not isinstance(got, tuple):
        got = (got,)
    if len(got) != len(expected):
        return "WRONG", f"{len(got)} outputs, expected {len(expected)}"
    for g, e in zip(got, expected):
        e = np.asarray(e)
        if g.shape != e.shape or g.dtype != e.dtype:
            return "WRONG", f"shape/dtype {g.shape} {g.dtype}, expected {e.shape} {e.dtype}"
        try:
            np.testing.assert_allclose(g, e, rtol=max(case.rtol, 1e-4), atol=max(case.atol, 1e-6))
        except AssertionError as exc:
            return "WRONG", str(exc).strip().splitlines()[0:4]
    return "pass", ""


def results():
    out = []
    for c in list(cases()) + list(data_cases()):
        status, detail = run_case(c)
        out.append((c.name, status, detail))
        ops = {n.op_type for n in c.model.graph.node}
        if "Conv" in ops and status == "refused" and len(c.model.graph.input) > 1:
            status, detail = run_case(c, freeze=True)
            out.append((c.name + "[frozen weights]", status, detail))
    return out


if __name__ == "__main__":
    import collections
    res = results()
    for name, status, detail in res:
        print(f"{status:8s} {name}  {detail if status != 'pass' else ''}")
    print(collections.Counter(s for _, s, _ in res))
