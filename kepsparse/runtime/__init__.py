"""Whole-network execution: the graph IR (``graph``), its NumPy operators (``ops``), the
executor (``engine.GraphModel``), the BLAS dense path (``dense``), per-layer kernel tuning
(``tune``), the torch drop-in (``torch_module``, as ``kepsparse.torch``) and the end-to-end
benchmark (``bench``). Importing this package imports neither torch nor onnx.
"""


def __getattr__(name):
    if name == "GraphModel":
        from .engine import GraphModel
        return GraphModel
    raise AttributeError(name)
