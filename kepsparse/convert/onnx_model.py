"""ONNX models -> sparse conv layers (Conv nodes whose weight is an initializer or Constant).

Each Conv node becomes a layer named after the node (or ``conv_<i>`` if unnamed), with its
strides, pads, dilations and group. The rest of the graph is the whole-network runtime's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConvertError, KepError, UnsupportedError
from ..formats import pack
from ..geometry import ConvGeometry
from ..model import SparseConv, SparseModel


def load_onnx(path: Path):
    import onnx
    try:
        return onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have many types
        raise ConvertError(f"cannot read as an ONNX model: {type(exc).__name__}: {exc}",
                           path=path) from None


def constant_tensors(graph) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs, by name."""
    from onnx import numpy_helper
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(attr.t)
    return consts


def conv_geometry(node, weight_shape, name: str) -> ConvGeometry:
    from onnx import helper
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    KH, KW = weight_shape[2:]
    if "kernel_shape" in attrs and list(attrs["kernel_shape"]) != [KH, KW]:
        raise ConvertError(f"kernel_shape {list(attrs['kernel_shape'])} disagrees with the "
                           f"weight's {[KH, KW]}", layer=name, field="kernel_shape")
    strides = list(attrs.get("strides", [1, 1]))
    dilations = list(attrs.get("dilations", [1, 1]))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", ""):
        pads = list(attrs.get("pads", [0, 0, 0, 0]))  # ONNX: [top, left, bottom, right]
        pad = (pads[0], pads[2], pads[1], pads[3])
    elif auto_pad == "VALID":
        pad = (0, 0, 0, 0)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER") and strides == [1, 1]:
        th, tw = dilations[0] * (KH - 1), dilations[1] * (KW - 1)
        small_first = auto_pad == "SAME_UPPER"  # SAME_UPPER puts the extra at the end
        top = th // 2 if small_first else th - th // 2
        left = tw // 2 if small_first else tw - tw // 2
        pad = (top, th - top, left, tw - left)
    else:
        raise UnsupportedError(f"auto_pad={auto_pad} with strides {strides} depends on the input "
                               "size; export with explicit pads", layer=name, field="auto_pad")
    return ConvGeometry.make(strides, pad, dilations, attrs.get("group", 1))


def layers_from_onnx(model_proto, source, format: str, min_sparsity: float,
                     max_patterns: int | None) -> SparseModel:
    graph = model_proto.graph
    consts = constant_tensors(graph)
    model = SparseModel()
    for i, node in enumerate(graph.node):
        if node.op_type != "Conv":
            continue
        name = node.name or f"conv_{i}"
        if len(node.input) < 2 or node.input[1] not in consts:
            raise ConvertError(f"Conv node's weight {node.input[1] if len(node.input) > 1 else ''!r} "
                               "is not an initializer or Constant", path=source, layer=name,
                               field="W")
        weight = consts[node.input[1]]
        if weight.ndim != 4:
            raise UnsupportedError(f"only 2-D convolutions are supported (weight is {weight.ndim}-D)",
                                   path=source, layer=name, field="W")
        if not np.issubdtype(weight.dtype, np.floating):
            raise UnsupportedError(f"weight dtype {weight.dtype} (quantized Conv is not supported)",
                                   path=source, layer=name, field="W")
        bias = None
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in consts:
                raise ConvertError("bias is not an initializer or Constant", path=source,
                                   layer=name, field="B")
            bias = np.asarray(consts[node.input[2]], dtype=np.float32).reshape(-1)
            if bias.shape != (weight.shape[0],):
                raise ConvertError(f"bias has {bias.size} entries for {weight.shape[0]} outputs",
                                   path=source, layer=name, field="B")
        try:
            geometry = conv_geometry(node, weight.shape, name)
            fmt = pack(weight.astype(np.float32), format, min_sparsity=min_sparsity,
                       max_patterns=max_patterns)
        except KepError as exc:
            raise exc.located(path=source, layer=name) from None
        if name in model.layers:
            name = f"{name}_{i}"
        model.add(SparseConv(name, fmt, bias, geometry))
    if not len(model):
        raise ConvertError("the ONNX graph has no Conv nodes", path=source)
    return model
