"""ONNX models -> a ``GraphModel``: sparse conv layers plus the network graph that runs them.

Each Conv node becomes a layer named after the node (or ``conv_<i>`` if unnamed), with its
strides, pads, dilations and group; its weight must be an initializer or a Constant. The
whole graph is normalised into kepsparse's IR (``kepsparse/runtime/graph.py``):

- Constant nodes become constants; old-opset attribute forms (Clip min/max, Pad pads/value,
  Reshape shape) become constant inputs; Softmax records its opset's semantics.
- BatchNormalization right after a Conv (its only consumer) is folded into the conv's weight
  and bias; the kept positions stay exactly the conv's (sparsity preserved).
- Relu, and Clip with constant bounds, right after a Conv are fused into it.
- Any operator, attribute, attribute value or dtype the runtime does not implement is refused
  here, with the node's name and op type: a model that converts runs exactly.
  The list is in ``docs/onnx_support.md``.

The file is untrusted. Tensors with external data are read only from regular files inside
the model's own folder (relative location, no symlink out of it), only the byte range the
tensor's dims need; an in-memory ``ModelProto`` with external references is refused (no
folder to confine them to). Every tensor's dims must match the data it holds, which bounds
every allocation by the file's size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConvertError, KepError, UnsupportedError
from ..formats import pack
from ..geometry import ConvGeometry
from ..model import SparseConv, SparseModel
from ..runtime.graph import DTYPES, OPS, Graph, Node, check_node_attrs, check_pool_attrs


def load_onnx(path: Path):
    import onnx
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have many types
        raise ConvertError(f"cannot read as an ONNX model: {type(exc).__name__}: {exc}",
                           path=path) from None
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            _read_external(tensor, Path(path))
    return model


def _all_tensors(model_proto):
    """Every TensorProto of the model: initializers and attribute tensors, at any depth
    (subgraphs, functions), including the parts of sparse tensors."""
    def of_sparse(sp):
        yield sp.values
        yield sp.indices

    def of_graph(g):
        yield from g.initializer
        for sp in g.sparse_initializer:
            yield from of_sparse(sp)
        for node in g.node:
            yield from of_node(node)

    def of_node(node):
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("sparse_tensor"):
                yield from of_sparse(a.sparse_tensor)
            for sp in a.sparse_tensors:
                yield from of_sparse(sp)
            if a.HasField("g"):
                yield from of_graph(a.g)
            for sub in a.graphs:
                yield from of_graph(sub)

    yield from of_graph(model_proto.graph)
    for fn in model_proto.functions:
        for node in fn.node:
            yield from of_node(node)


def _tensor_nbytes(tensor) -> int | None:
    """Bytes the tensor's dims imply for its element type; None if not a fixed-size type."""
    from onnx import helper
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except Exception:  # noqa: BLE001 - unknown, string or sub-byte types
        return None
    if any(d < 0 for d in tensor.dims):
        return None
    return _prod(tensor.dims) * itemsize


def _read_external(tensor, path: Path) -> None:
    """Fill an external tensor's raw_data from a file confined to the model's folder."""
    from onnx import TensorProto

    def refuse(message, field="external_data"):
        return ConvertError(f"initializer {tensor.name!r}: external data {message}", path=path,
                            field=field)

    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    rel = Path(location)
    if not location or rel.is_absolute() or ".." in rel.parts or "\x00" in location:
        raise refuse(f"location {location!r} must be a file name relative to the model's folder")
    folder = path.resolve().parent
    target = (folder / rel).resolve()
    if not target.is_relative_to(folder):
        raise refuse(f"location {location!r} leads outside the model's folder")
    if not target.is_file():
        raise refuse(f"file {location!r} does not exist or is not a regular file")
    try:
        offset = int(info.get("offset", 0))
        size = target.stat().st_size
        length = int(info["length"]) if "length" in info else size - offset
    except ValueError:
        raise refuse("offset/length are not integers") from None
    expected = _tensor_nbytes(tensor)
    if expected is None:
        raise refuse(f"of element type {tensor.data_type} is not supported")
    if offset < 0 or length != expected or offset + length > size:
        raise refuse(f"range offset={offset}, length={length} does not hold the {expected:,} "
                     f"bytes of dims {list(tensor.dims)} within the file's {size:,} bytes")
    with open(target, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise refuse("file shrank while being read")
    tensor.raw_data = data
    del tensor.external_data[:]
    tensor.data_location = TensorProto.DEFAULT


def _to_array(tensor, err, what: str) -> np.ndarray:
    """A TensorProto as a NumPy array, checked first: stored here (not external), dims that
    match its data. ``err(message, field)`` makes the exception."""
    from onnx import TensorProto, numpy_helper
    if tensor.data_location == TensorProto.EXTERNAL:
        raise err(f"{what} {tensor.name!r} has external data; convert the model from its file "
                  "path so it can be read from the model's folder", "external_data")
    if any(d < 0 for d in tensor.dims):
        raise err(f"{what} {tensor.name!r} has negative dims {list(tensor.dims)}", "dims")
    if tensor.HasField("raw_data"):
        expected = _tensor_nbytes(tensor)
        if expected is not None and expected != len(tensor.raw_data):
            raise err(f"{what} {tensor.name!r}: dims {list(tensor.dims)} need {expected:,} bytes, "
                      f"raw_data holds {len(tensor.raw_data):,}", "raw_data")
    try:
        return numpy_helper.to_array(tensor)
    except Exception as exc:  # noqa: BLE001 - onnx/numpy raise many types for bad tensors
        raise err(f"{what} {tensor.name!r} is unreadable: {type(exc).__name__}: "
                  f"{str(exc)[:200]}", "dims") from None


def conv_geometry(node, weight_shape, name: str) -> ConvGeometry:
    from onnx import helper
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    KH, KW = weight_shape[2:]
    if "kernel_shape" in attrs and _ints(attrs, "kernel_shape", None, 2, name) != [KH, KW]:
        raise ConvertError(f"kernel_shape {list(attrs['kernel_shape'])} disagrees with the "
                           f"weight's {[KH, KW]}", layer=name, field="kernel_shape")
    group = attrs.get("group", 1)
    if not isinstance(group, int) or isinstance(group, bool):
        raise UnsupportedError(f"group must be an integer, got {group!r}", layer=name,
                               field="group")
    strides = _ints(attrs, "strides", [1, 1], 2, name)
    dilations = _ints(attrs, "dilations", [1, 1], 2, name)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", ""):
        pads = _ints(attrs, "pads", [0, 0, 0, 0], 4, name)  # ONNX: [top, left, bottom, right]
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
    return ConvGeometry.make(strides, pad, dilations, group)


def _ints(attrs: dict, key: str, default: list, n: int, name: str) -> list:
    """A Conv attribute that must list ``n`` integers (2-D convolutions only)."""
    v = attrs.get(key, default)
    if not isinstance(v, (list, tuple)) or len(v) != n or \
            not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        raise UnsupportedError(f"must list {n} integers for a 2-D convolution, got {v!r}",
                               layer=name, field=key)
    return list(v)


# ----------------------------------------------------------------------------- graph import

# never evaluated at convert time: random ops must stay random, Conv stays a layer
_NO_FOLD = {"Conv", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
            "Multinomial", "Bernoulli"}
_FOLD_MAX_ELEMENTS = 1 << 26

_CONV_ATTRS = {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"}
# attributes the runtime accepts and ignores (they change nothing at inference)
_IGNORED = {"BatchNormalization": {"momentum"}, "MaxPool": set()}


def _opset(model_proto) -> int:
    for imp in model_proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def _np_dtype(elem_type: int):
    from onnx import helper
    try:
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:  # noqa: BLE001 - unknown/extended element types
        return None
    return dt if str(dt) in DTYPES else None


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_float(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


_ATTR_KINDS = {"int": _is_int, "float": _is_float, "str": lambda v: isinstance(v, str),
               "ints": lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
               "floats": lambda v: isinstance(v, list) and all(_is_float(x) for x in v)}
# attributes the converter reads itself (old-opset forms, training-only flags), beside OPS'
_CONVERTER_ATTRS = {"min": "float", "max": "float", "value": "float", "pads": "ints",
                    "shape": "ints", "starts": "ints", "ends": "ints", "axes": "ints",
                    "momentum": "float", "spatial": "int", "training_mode": "int",
                    "is_test": "int", "storage_order": "int", "epsilon": "float", "axis": "int",
                    "mode": "str"}


def _check_attr_types(op: str, attrs: dict, refuse) -> None:
    """Every attribute the converter or the runtime reads has the ONNX type it expects."""
    known = OPS[op][0] if op in OPS else {}
    for k, v in attrs.items():
        kind = known.get(k) or _CONVERTER_ATTRS.get(k)
        if kind is not None and not _ATTR_KINDS[kind](v):
            raise refuse(f"attribute {k!r} must be of type {kind}, got {v!r}"[:300], k)


def _attr_dict(node, where):
    from onnx import AttributeProto, helper
    out = {}
    for a in node.attribute:
        if a.ref_attr_name:
            raise UnsupportedError("attributes referring to function attributes are not supported",
                                   field=a.name, **where)
        if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS, AttributeProto.SPARSE_TENSOR,
                      AttributeProto.SPARSE_TENSORS, AttributeProto.TYPE_PROTO,
                      AttributeProto.TYPE_PROTOS, AttributeProto.TENSORS):
            raise UnsupportedError(f"{node.op_type}: attribute {a.name!r} of this type is not "
                                   "supported", field=a.name, **where)
        try:
            v = helper.get_attribute_value(a)
        except Exception as exc:  # noqa: BLE001 - an undefined or mismatched attribute type
            raise UnsupportedError(f"{node.op_type}: attribute {a.name!r} is unreadable: {exc}"[:300],
                                   field=a.name, **where) from None
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, (list, tuple)):
            v = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


class _Importer:
    def __init__(self, model_proto, source):
        self.proto, self.source = model_proto, source
        self.opset = _opset(model_proto)
        self.constants: dict[str, np.ndarray] = {}
        self.nodes: list[Node] = []
        self.convs: dict[str, tuple] = {}  # layer name -> (weight f32, bias or None, geometry)
        self.names: set[str] = set()
        self.fold_budget = _FOLD_MAX_ELEMENTS  # elements all folded outputs may add up to

    def err(self, cls, message, node_name=None, op=None, field=None):
        layer = None if node_name is None else (f"{node_name} ({op})" if op else node_name)
        return cls(message, path=self.source, layer=layer, field=field)

    def const(self, value, name_hint: str) -> str:
        name = name_hint
        k = 0
        while name in self.constants:
            k += 1
            name = f"{name_hint}_{k}"
        self.constants[name] = value
        return name

    def run(self) -> tuple[Graph, dict]:
        from onnx import TensorProto
        g = self.proto.graph
        for tensor in _all_tensors(self.proto):  # load_onnx has read (confined) a file's
            if tensor.data_location == TensorProto.EXTERNAL:
                raise self.err(ConvertError, f"tensor {tensor.name!r} has external data; "
                               "convert the model from its file path so it can be read from "
                               "the model's folder", field="external_data")
        for domain in {imp.domain for imp in self.proto.opset_import} - {"", "ai.onnx"}:
            if any(n.domain == domain for n in g.node):
                raise self.err(UnsupportedError, f"operator domain {domain!r} is not supported",
                               field="domain")
        for init in g.initializer:
            arr = _to_array(init, lambda m, f: self.err(ConvertError, m, field=f), "initializer")
            if str(arr.dtype) not in DTYPES:
                raise self.err(UnsupportedError, f"initializer {init.name!r} has dtype "
                               f"{arr.dtype}, which the runtime does not support", field="dtype")
            self.constants[init.name] = arr
            self.fold_budget += arr.size
        if len(g.sparse_initializer):
            raise self.err(UnsupportedError, "sparse initializers are not supported",
                           field="sparse_initializer")
        inputs = []
        for vi in g.input:
            if vi.name in self.constants:
                continue  # IR < 4 lists initializers among the inputs
            inputs.append(self.value_spec(vi, "input"))
        for i, node in enumerate(g.node):
            self.import_node(i, node)
        outputs = []
        for vi in g.output:
            self.value_spec(vi, "output")
            outputs.append(vi.name)
        graph = Graph(inputs, outputs, self.nodes, self.constants)
        self.toposort(graph)
        if any(n.op == "SparseConv" for n in graph.nodes):
            for spec in inputs:
                if np.dtype(spec["dtype"]).kind == "f" and spec["dtype"] != "float32":
                    raise self.err(UnsupportedError, f"graph input {spec['name']!r} is "
                                   f"{spec['dtype']}: convolutions run in float32 only",
                                   field="dtype")
        fold_batchnorm(graph, self.convs)
        fuse_activations(graph)
        used = {t for n in graph.nodes for t in n.inputs} | set(graph.outputs)
        graph.constants = {k: v for k, v in graph.constants.items() if k in used}
        from ..runtime.graph import validate
        validate(graph, self.convs, err=ConvertError, path=self.source)
        return graph, self.convs

    def value_spec(self, vi, kind):
        t = vi.type
        if t.WhichOneof("value") != "tensor_type":
            raise self.err(UnsupportedError, f"graph {kind} {vi.name!r} is not a tensor "
                           f"({t.WhichOneof('value')}); only tensors are supported",
                           field=kind)
        dt = _np_dtype(t.tensor_type.elem_type)
        if dt is None:
            raise self.err(UnsupportedError, f"graph {kind} {vi.name!r} has an element type "
                           f"(code {t.tensor_type.elem_type}) the runtime does not support",
                           field="dtype")
        shape = None
        if t.tensor_type.HasField("shape"):
            shape = [d.dim_value if d.HasField("dim_value") else None
                     for d in t.tensor_type.shape.dim]
        return {"name": vi.name, "dtype": str(dt), "shape": shape}

    def unique_name(self, name):
        base, k = name, 0
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def import_node(self, i, node):
        op = node.op_type
        name = self.unique_name(node.name or f"{op.lower()}_{i}")
        where = dict(path=self.source, layer=f"{name} ({op})")
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedError(f"operator {node.domain}.{op} is not supported", field="domain",
                                   **where)
        attrs = _attr_dict(node, where)
        inputs, outputs = list(node.input), list(node.output)

        def refuse(msg, field="op_type"):
            return UnsupportedError(msg, field=field, **where)

        def only(allowed):
            for k in attrs:
                if k not in allowed:
                    raise refuse(f"attribute {k!r} is not supported", field=k)

        if op == "Constant":
            if len(outputs) != 1 or not outputs[0]:
                raise refuse("Constant needs exactly one output", field="outputs")
            if len(attrs) != 1:
                raise refuse("Constant needs exactly one value attribute", field="value")
            (k, v), = attrs.items()
            if k == "value":
                arr = _to_array(next(a.t for a in node.attribute if a.name == "value"),
                                lambda m, f: ConvertError(m, field=f, **where), "Constant value")
            elif k == "value_float":
                arr = np.array(v, np.float32)
            elif k == "value_floats":
                arr = np.array(v, np.float32)
            elif k == "value_int":
                arr = np.array(v, np.int64)
            elif k == "value_ints":
                arr = np.array(v, np.int64)
            else:
                raise refuse(f"attribute {k!r} is not supported", field=k)
            if str(arr.dtype) not in DTYPES:
                raise refuse(f"constant of dtype {arr.dtype} is not supported", field="dtype")
            self.constants[outputs[0]] = arr
            return
        if op not in _NO_FOLD and inputs and all(t in self.constants for t in inputs if t):
            folded = self.fold(node, inputs, name)
            if folded is not None:
                for o, v in zip(outputs, folded):
                    if o:
                        self.constants[o] = v
                return
        if op == "Conv":
            self.import_conv(name, node, attrs, inputs, outputs, where)
            return
        if op not in OPS or op == "SparseConv":
            raise refuse(f"operator {op} is not supported")
        _check_attr_types(op, attrs, refuse)
        keep = {}
        if op == "BatchNormalization":
            only({"epsilon", "momentum", "spatial", "training_mode", "is_test"})
            if attrs.get("spatial", 1) != 1:
                raise refuse("spatial=0 (per-activation statistics) is not supported", "spatial")
            if attrs.get("training_mode", 0) != 0:
                raise refuse("training_mode=1 is not supported (inference only)", "training_mode")
            if any(outputs[1:]):
                raise refuse("the running-statistics outputs (training) are not supported",
                             "outputs")
            outputs = outputs[:1]
            if "epsilon" in attrs:
                keep["epsilon"] = float(attrs["epsilon"])
        elif op == "Clip":
            if self.opset < 11:
                only({"min", "max"})
                lo = self.const(np.array(attrs.get("min", -3.4028234663852886e38), np.float32),
                                f"{name}/min")
                hi = self.const(np.array(attrs.get("max", 3.4028234663852886e38), np.float32),
                                f"{name}/max")
                inputs = [inputs[0], lo, hi]
            else:
                only(set())
        elif op == "Reshape":
            if self.opset < 5:
                only({"shape"})
                inputs = [inputs[0], self.const(np.array(attrs.get("shape", []), np.int64),
                                                f"{name}/shape")]
            else:
                only({"allowzero"})
                keep = dict(attrs)
        elif op == "Pad":
            if self.opset < 11:
                only({"mode", "pads", "value"})
                inputs = [inputs[0], self.const(np.array(attrs.get("pads", []), np.int64),
                                                f"{name}/pads"),
                          self.const(np.array(attrs.get("value", 0.0), np.float32),
                                     f"{name}/value")]
            else:
                only({"mode"})
            keep = {"mode": attrs.get("mode", "constant")}
            if keep["mode"] not in ("constant", "reflect", "edge", "wrap"):
                raise refuse(f"mode {keep['mode']!r} is not supported", "mode")
        elif op == "Softmax":
            only({"axis"})
            keep = {"axis": int(attrs.get("axis", 1 if self.opset < 13 else -1)),
                    "legacy": int(self.opset < 13)}
        elif op in ("MaxPool", "AveragePool"):
            allowed = set(OPS[op][0]) | {"storage_order"}
            only(allowed)
            if any(outputs[1:]):
                raise refuse("the Indices output is not supported", "outputs")
            outputs = outputs[:1]
            if op == "AveragePool" and self.opset < 19 and "dilations" in attrs:
                raise refuse("dilations on AveragePool before opset 19", "dilations")
            keep = {k: v for k, v in attrs.items() if k != "storage_order"}
            if keep.get("auto_pad") == "NOTSET":
                del keep["auto_pad"]
            if keep.get("auto_pad") and "pads" in keep:
                del keep["pads"]
            if not isinstance(keep.get("kernel_shape"), list):
                raise refuse("kernel_shape (a list of ints) is required", "kernel_shape")
            check_pool_attrs(Node(f"{name} ({op})", op, inputs, outputs, keep),
                             err=UnsupportedError, path=self.source)
        elif op == "Slice":
            if self.opset < 10:
                only({"starts", "ends", "axes"})
                inputs = [inputs[0]] + [self.const(np.array(attrs[k], np.int64), f"{name}/{k}")
                                        for k in ("starts", "ends") if k in attrs]
                if "axes" in attrs:
                    inputs.append(self.const(np.array(attrs["axes"], np.int64), f"{name}/axes"))
                if len(inputs) < 3:
                    raise refuse("starts and ends are required", "starts")
            else:
                only(set())
            keep = {}
        elif op == "Concat":
            only({"axis"})
            keep = {"axis": int(attrs.get("axis", 1))}
        else:
            keep = dict(attrs)
        n = Node(name, op, inputs, outputs, keep)
        required = OPS[op][1][0]
        if len(inputs) < required or not all(inputs[:required]):
            raise refuse(f"{op} needs {required} input(s), got {inputs}", "inputs")
        while n.inputs and n.inputs[-1] == "":
            n.inputs.pop()  # trailing omitted optional inputs
        try:
            check_node_attrs(n, err=UnsupportedError, path=self.source)
        except UnsupportedError as exc:
            raise UnsupportedError(exc.message, path=self.source, layer=f"{name} ({op})",
                                   field=exc.field) from None
        self.nodes.append(n)

    def fold(self, node, inputs, name):
        """Evaluate a node whose inputs are all constants (ONNX reference implementation);
        None when it cannot be folded (then it is imported, or refused, as usual).

        The output size is computed before evaluating (ConstantOfShape, Expand, Tile, Range,
        and whatever ONNX shape inference can tell); a node whose output size cannot be
        predicted is not evaluated here (e.g. Resize with scales, where inference does not
        know the opset). Each output is at most _FOLD_MAX_ELEMENTS and all folded outputs
        together at most that plus the elements of the initializers, so a tiny file cannot
        make the converter allocate a huge tensor, nor many large ones."""
        feeds = {t: self.constants[t] for t in inputs if t}
        size = _fold_output_elements(node, [self.constants[t] if t else None for t in inputs],
                                     feeds, self.opset)
        if size is None:
            return None
        if size > min(_FOLD_MAX_ELEMENTS, self.fold_budget):
            raise self._too_large(node, name, size)
        try:
            from onnx.reference import ReferenceEvaluator
            ev = ReferenceEvaluator(node, opsets={"": self.opset})
            values = ev.run(None, feeds)
        except Exception:  # noqa: BLE001 - not foldable here: handle the node normally
            return None
        values = [np.asarray(v) for v in values]
        for v in values:
            if v.size > min(_FOLD_MAX_ELEMENTS, self.fold_budget):
                raise self._too_large(node, name, v.size)
            self.fold_budget -= v.size
        if any(str(v.dtype) not in DTYPES for v in values):
            return None
        return values

    def _too_large(self, node, name, size):
        limit = min(_FOLD_MAX_ELEMENTS, self.fold_budget)
        why = "" if limit == _FOLD_MAX_ELEMENTS else \
            ", what is left of the model's budget for folded constants"
        return UnsupportedError(f"its constant output would hold {size:,} elements (more than "
                                f"{max(limit, 0):,}{why})", path=self.source,
                                layer=f"{name} ({node.op_type})", field="output")

    def import_conv(self, name, node, attrs, inputs, outputs, where):
        for k in attrs:
            if k not in _CONV_ATTRS:
                raise UnsupportedError(f"attribute {k!r} is not supported", field=k, **where)
        if not inputs or not inputs[0]:
            raise ConvertError("Conv node has no input X", field="X", **where)
        if len(inputs) < 2 or inputs[1] not in self.constants:
            raise ConvertError(f"Conv node's weight {inputs[1] if len(inputs) > 1 else ''!r} "
                               "is not an initializer or Constant", field="W", **where)
        weight = self.constants[inputs[1]]
        if weight.ndim != 4:
            raise UnsupportedError(f"only 2-D convolutions are supported (weight is "
                                   f"{weight.ndim}-D)", field="W", **where)
        if weight.dtype != np.float32:
            raise UnsupportedError(f"weight dtype {weight.dtype}: only float32 convolutions are "
                                   "supported", field="W", **where)
        bias = None
        if len(inputs) > 2 and inputs[2]:
            if inputs[2] not in self.constants:
                raise ConvertError("bias is not an initializer or Constant", field="B", **where)
            bias = np.asarray(self.constants[inputs[2]], dtype=np.float32).reshape(-1)
            if bias.shape != (weight.shape[0],):
                raise ConvertError(f"bias has {bias.size} entries for {weight.shape[0]} outputs",
                                   field="B", **where)
        try:
            geometry = conv_geometry(node, weight.shape, name)
        except KepError as exc:
            raise UnsupportedError(exc.message, field=exc.field, **where) from None
        layer = name
        self.convs[layer] = (np.array(weight, np.float32), bias, geometry)
        self.nodes.append(Node(name, "SparseConv", inputs[:1], outputs, {"layer": layer}))

    def toposort(self, graph: Graph):
        """Order the nodes so every input is produced before use; refuse cycles."""
        avail = {s["name"] for s in graph.inputs} | set(graph.constants)
        pending = list(graph.nodes)
        ordered = []
        while pending:
            progress = False
            rest = []
            for n in pending:
                if all((not t) or t in avail for t in n.inputs):
                    ordered.append(n)
                    avail.update(n.outputs)
                    progress = True
                else:
                    rest.append(n)
            if not progress:
                n = rest[0]
                missing = [t for t in n.inputs if t and t not in avail]
                raise self.err(ConvertError, f"input(s) {missing} are never produced (undefined "
                               "tensor or a cycle)", n.name, n.op, "inputs")
            pending = rest
        graph.nodes = ordered


def _fold_output_elements(node, values: list, feeds: dict, opset: int) -> int | None:
    """The number of elements of ``node``'s largest output, computed from its constant
    inputs without evaluating it; None when unknown. Python ints: no overflow."""
    op = node.op_type

    def ints(v):
        a = np.asarray(v)
        if a.dtype.kind not in "iu" or a.ndim > 1:
            return None
        return [int(i) for i in a.reshape(-1)]

    if any(v is None for v in values):
        return _inferred_output_elements(node, feeds, opset)  # omitted optional inputs
    try:
        if op == "ConstantOfShape" and values:
            dims = ints(values[0])
            if dims is not None and all(d >= 0 for d in dims):
                return _prod(dims)
            return None
        if op == "Expand" and len(values) == 2:
            dims = ints(values[1])
            if dims is None or any(d < 0 for d in dims):
                return None
            a = list(np.shape(values[0]))
            n = max(len(a), len(dims))
            a, b = [1] * (n - len(a)) + a, [1] * (n - len(dims)) + dims
            out = []
            for x, y in zip(a, b):
                if x != y and 1 not in (x, y):
                    return None  # not broadcastable: the evaluator will refuse it
                out.append(y if x == 1 else x)
            return _prod(out)
        if op == "Tile" and len(values) >= 2:
            reps = ints(values[1])
            if reps is None or any(r < 0 for r in reps):
                return None
            return int(np.size(values[0])) * _prod(reps)
        if op == "Range" and len(values) == 3:
            start, limit, delta = (np.asarray(v).reshape(-1) for v in values)
            if not (start.size == limit.size == delta.size == 1):
                return None
            start, limit, delta = float(start[0]), float(limit[0]), float(delta[0])
            if delta == 0 or np.isnan([start, limit, delta]).any():
                return None
            n = (limit - start) / delta
            if not np.isfinite(n):
                return _FOLD_MAX_ELEMENTS + 1 if n > 0 else None
            return max(int(np.ceil(n)), 0)
    except (TypeError, ValueError, OverflowError):
        return None
    return _inferred_output_elements(node, feeds, opset)


def _inferred_output_elements(node, feeds: dict, opset: int) -> int | None:
    """Output size from ONNX shape inference on the node alone (small constant inputs given
    as data, large ones by type and shape only); None when it cannot tell."""
    try:
        from onnx import helper, numpy_helper, shape_inference
        inits, vis = [], []
        for t, v in feeds.items():
            v = np.asarray(v)
            if v.size <= 4096:
                inits.append(numpy_helper.from_array(v, t))
            else:
                vis.append(helper.make_tensor_value_info(
                    t, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)))
        g = helper.make_graph([node], "fold", vis, [], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m = shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is only a guard: unknown then
        return None
    best = None
    for vi in m.graph.value_info:
        tt = vi.type.tensor_type
        if vi.name not in node.output or not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if any(d is None or d < 0 for d in dims):
            continue
        best = _prod(dims) if best is None else max(best, _prod(dims))
    return best


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def fold_batchnorm(graph: Graph, convs: dict) -> None:
    """Fold BatchNormalization nodes that directly follow a SparseConv into its weight/bias."""
    outs = set(graph.outputs)
    changed = True
    while changed:
        changed = False
        consumers = graph.consumers()
        producer = {o: n for n in graph.nodes for o in n.outputs}
        for bn in graph.nodes:
            if bn.op != "BatchNormalization":
                continue
            conv = producer.get(bn.inputs[0])
            if conv is None or conv.op != "SparseConv" or conv.attrs.get("act", "none") != "none":
                continue
            if bn.inputs[0] in outs or len(consumers.get(bn.inputs[0], [])) != 1:
                continue
            if not all(t in graph.constants for t in bn.inputs[1:]):
                continue
            scale, beta, mean, var = (np.asarray(graph.constants[t], np.float64).reshape(-1)
                                      for t in bn.inputs[1:])
            w, b, geo = convs[conv.attrs["layer"]]
            O = w.shape[0]
            if not all(v.shape == (O,) for v in (scale, beta, mean, var)):
                continue
            s = scale / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
            mask = w != 0
            w2 = (w.astype(np.float64) * s[:, None, None, None]).astype(np.float32)
            w2[~mask] = 0
            b0 = np.zeros(O) if b is None else b.astype(np.float64)
            b2 = ((b0 - mean) * s + beta).astype(np.float32)
            convs[conv.attrs["layer"]] = (w2, b2, geo)
            conv.outputs = list(bn.outputs)
            graph.nodes.remove(bn)
            conv.attrs["folded"] = bn.name
            changed = True
            break
    for n in graph.nodes:
        n.attrs.pop("folded", None)


def _scalar(graph, name):
    if not name:
        return None
    if name not in graph.constants:
        return False
    v = np.asarray(graph.constants[name])
    if v.size != 1 or v.dtype.kind != "f":
        return False
    return float(v.reshape(-1)[0])


def fuse_activations(graph: Graph) -> None:
    """Relu / Clip (constant bounds) right after a SparseConv become its fused activation."""
    outs = set(graph.outputs)
    changed = True
    while changed:
        changed = False
        consumers = graph.consumers()
        producer = {o: n for n in graph.nodes for o in n.outputs}
        for act in graph.nodes:
            if act.op not in ("Relu", "Clip"):
                continue
            conv = producer.get(act.inputs[0])
            if conv is None or conv.op != "SparseConv" or conv.attrs.get("act", "none") != "none":
                continue
            if act.inputs[0] in outs or len(consumers.get(act.inputs[0], [])) != 1:
                continue
            if act.op == "Relu":
                conv.attrs["act"] = "relu"
            else:
                lo = _scalar(graph, act.inputs[1] if len(act.inputs) > 1 else "")
                hi = _scalar(graph, act.inputs[2] if len(act.inputs) > 2 else "")
                if lo is False or hi is False:
                    continue
                conv.attrs["act"] = "clip"
                if lo is not None and lo > -3.0e38:
                    conv.attrs["clip_min"] = lo
                if hi is not None and hi < 3.0e38:
                    conv.attrs["clip_max"] = hi
            conv.outputs = list(act.outputs)
            graph.nodes.remove(act)
            changed = True
            break


def layers_from_onnx(model_proto, source, format: str, min_sparsity: float,
                     max_patterns: int | None) -> SparseModel:
    """The model's conv layers (packed) and its graph, as a ``GraphModel``."""
    from ..runtime.engine import GraphModel
    graph, convs = _Importer(model_proto, source).run()
    model = GraphModel(graph=graph)
    for name, (weight, bias, geometry) in convs.items():
        try:
            fmt = pack(weight, format, mask=weight != 0, min_sparsity=min_sparsity,
                       max_patterns=max_patterns)
        except KepError as exc:
            raise exc.located(path=source, layer=name) from None
        model.add(SparseConv(name, fmt, bias, geometry))
    model.metadata["onnx_opset"] = _opset(model_proto)
    return model
