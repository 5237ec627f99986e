"""The dense competition, timed in the same run on the same weights (dense, zeros included).

- ``torch_nchw``: ``torch.nn.functional.conv2d`` on contiguous NCHW tensors.
- ``torch_channels_last``: the same with input and weight in ``torch.channels_last``
  (converted once, outside the timed call: the competitor's best case).
- ``onnxruntime``: a one-node ``Conv`` ONNX model (weight as initializer, IR version 13),
  ``SessionOptions.intra_op_num_threads`` = threads, inter-op 1, all graph optimizations on.

Each competitor's thread count is set explicitly before it is timed (``activate``).
``setup`` returns a zero-argument callable that runs the layer once and returns the output
as a NumPy NCHW array (for verification; the timed call returns the library's own object).
"""
from __future__ import annotations

import importlib.util

import numpy as np

COMPETITORS = ("torch_nchw", "torch_channels_last", "onnxruntime")
ORT_IR_VERSION = 13  # onnxruntime 1.31 accepts at most IR 13; onnx 1.23 writes 14


def unavailable_reason(name: str) -> str | None:
    need = {"torch_nchw": "torch", "torch_channels_last": "torch", "onnxruntime": "onnxruntime"}[name]
    if importlib.util.find_spec(need) is None:
        return f"{need} is not installed (pip install kepsparse[{'torch' if need == 'torch' else 'onnx'}])"
    if name == "onnxruntime" and importlib.util.find_spec("onnx") is None:
        return "onnx is not installed (pip install kepsparse[onnx])"
    return None


def torch_judge(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Dense torch conv2d output, the judge every kernel is verified against."""
    import torch
    import torch.nn.functional as F
    with torch.inference_mode():
        return F.conv2d(torch.from_numpy(x), torch.from_numpy(w), None, stride=stride,
                        padding=padding).numpy()


class Competitor:
    kind = "competitor"

    def __init__(self, name: str):
        self.name = name
        self.backend = name
        self.format = "dense"

    def activate(self, threads: int) -> None:
        if self.name.startswith("torch"):
            import torch
            torch.set_num_threads(threads)

    def setup(self, x: np.ndarray, w: np.ndarray, stride: int, padding: int, threads: int):
        """(timed callable, callable giving the NumPy output)."""
        if self.name == "onnxruntime":
            return _ort_setup(x, w, stride, padding, threads)
        import torch
        import torch.nn.functional as F
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        if self.name == "torch_channels_last":
            xt = xt.contiguous(memory_format=torch.channels_last)
            wt = wt.contiguous(memory_format=torch.channels_last)

        def run():
            with torch.inference_mode():
                return F.conv2d(xt, wt, None, stride=stride, padding=padding)

        return run, lambda: run().contiguous().numpy()


def _ort_setup(x, w, stride, padding, threads):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    Ho = (H + 2 * padding - KH) // stride + 1
    Wo = (W + 2 * padding - KW) // stride + 1
    node = helper.make_node("Conv", ["X", "W"], ["Y"], kernel_shape=[KH, KW],
                            strides=[stride, stride], pads=[padding] * 4)
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [N, C, H, W])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [N, O, Ho, Wo])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(w, np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = ORT_IR_VERSION
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    run = _OrtRun(model.SerializeToString(), so, {"X": x})
    return run, run


class _OrtRun:
    """onnxruntime's conv, callable; ``release()`` destroys the session (joining its threads).

    onnxruntime's intra-op workers keep spinning on the cores after a call, long enough to
    slow whatever runs next in this process (measured: a 128x128x28x28 sparse layer took
    0.13 ms alone and 0.22 ms in a block right after an onnxruntime block, at 2 threads).
    The runner releases every contender after its timing block; the next call recreates and
    warms the session outside the timed calls (sample()'s first call is untimed)."""

    def __init__(self, model_bytes: bytes, options, feed: dict):
        self.model_bytes, self.options, self.feed = model_bytes, options, feed
        self.sess = None

    def __call__(self):
        if self.sess is None:
            import onnxruntime as ort
            self.sess = ort.InferenceSession(self.model_bytes, self.options,
                                             providers=["CPUExecutionProvider"])
            self.sess.run(["Y"], self.feed)
        return self.sess.run(["Y"], self.feed)[0]

    def release(self) -> None:
        self.sess = None
