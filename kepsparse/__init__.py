"""kepsparse: run element-pruned (KEP) CNNs fast on CPUs and export them to FPGAs.

    model = kepsparse.convert("pruned.pt")        # or .safetensors, .onnx, an nn.Module
    kepsparse.save(model, "model.kep"); model = kepsparse.load("model.kep")
    y = model["layer1.0.conv1"](x, backend="auto")
    y = kepsparse.conv2d(x, weight, stride=1, padding=1)   # weight: format object or array
"""
__version__ = "0.1.0"

from .errors import (BackendUnavailableError, ConvertError, FormatError, InputError, KepError,
                     KepFileError, UnsupportedError)
from .conv import conv2d
from .formats import FORMATS, CSRFormat, DenseFormat, PatternFormat, SparseFormat, pack
from .geometry import ConvGeometry
from .model import SparseConv, SparseModel
from .kepfile import load, save
from .convert import convert
from .kernels import backend_status

__all__ = ["__version__", "conv2d", "convert", "save", "load", "pack", "backend_status",
           "FORMATS", "SparseFormat", "DenseFormat", "CSRFormat", "PatternFormat",
           "ConvGeometry", "SparseConv", "SparseModel",
           "KepError", "FormatError", "KepFileError", "ConvertError", "UnsupportedError",
           "InputError", "BackendUnavailableError"]


def __getattr__(name):
    # torch-dependent and heavier parts load on first use: `import kepsparse` stays torch-free
    import importlib
    if name == "torch":
        return importlib.import_module(".torch", __name__)
    if name == "GraphModel":
        return importlib.import_module(".runtime.engine", __name__).GraphModel
    raise AttributeError(f"module 'kepsparse' has no attribute {name!r}")
