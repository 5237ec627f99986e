"""Fixtures of the runtime tests: reference networks exported once per session with
torch.onnx.export, and their KEP-pruned copies (pruned in the ONNX initializers)."""
from __future__ import annotations

import numpy as np
import pytest

# (network, input (C, H, W)): small spatial sizes for the ImageNet nets keep the tests fast
NETWORKS = {"resnet18": (3, 64, 64), "resnet50": (3, 64, 64), "resnet56": (3, 32, 32),
            "vgg16_bn": (3, 32, 32)}


def build(name):
    from kepsparse.runtime.bench import build_net
    return build_net(name, seed=0)


def prune_onnx(proto, sparsity=0.85):
    """Copy of ``proto`` with every conv weight but the first KEP-masked (magnitude patterns)."""
    import onnx
    from onnx import numpy_helper

    from kepsparse.runtime.netutil import kep_mask
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    conv_w = [n.input[1] for n in m.graph.node if n.op_type == "Conv"]
    first = conv_w[0]
    for init in m.graph.initializer:
        if init.name in conv_w and init.name != first:
            a = numpy_helper.to_array(init)
            if a.shape[2] * a.shape[3] > 1:
                pruned = np.where(kep_mask(a, sparsity), a, np.float32(0)).astype(np.float32)
                init.CopyFrom(numpy_helper.from_array(pruned, init.name))
    return m


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """name -> (dense .onnx path, pruned .onnx path, input shape), exported lazily."""
    pytest.importorskip("torch")
    import onnx
    import torch
    torch.set_num_threads(2)
    from kepsparse.runtime.netutil import export_onnx
    root = tmp_path_factory.mktemp("nets")
    cache = {}

    def get(name):
        if name not in cache:
            shape = NETWORKS[name]
            dense = root / f"{name}.onnx"
            export_onnx(build(name), shape, dense)
            pruned = root / f"{name}_kep.onnx"
            onnx.save(prune_onnx(onnx.load(str(dense))), str(pruned))
            cache[name] = (dense, pruned, shape)
        return cache[name]
    return get


def ort_session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def assert_matches_ort(y, y_ort):
    err = float(np.abs(y - y_ort).max())
    tol = 1e-4 * float(np.abs(y_ort).max()) + 1e-5
    assert y.shape == y_ort.shape and y.dtype == y_ort.dtype
    assert err <= tol, f"max |y - y_ort| = {err:.3g} > {tol:.3g}"
