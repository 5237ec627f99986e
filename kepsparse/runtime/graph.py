"""The network graph a ``SparseModel`` may carry: nodes, attributes, constant tensors.

A ``Graph`` is kepsparse's own small IR, not ONNX: the converter (``convert/onnx_model.py``)
normalises every ONNX opset variant into it (Constant nodes become constants, old-opset
attributes become inputs, BatchNormalization after Conv is folded, Relu/Clip fused), so the
executor and the file format see one spelling per operator.

    Graph.inputs     [{"name", "dtype", "shape"}]  shape entries: int or null (any size)
    Graph.outputs    [name, ...]
    Graph.nodes      [Node(name, op, inputs, outputs, attrs)] in execution (topological) order;
                     an input "" is an omitted optional input
    Graph.constants  {name: ndarray}

Ops and their attributes are listed once in ``OPS``; ``validate`` checks a graph against it
(every node input defined before use, so no cycles; ops known; attribute names and types
right; SparseConv nodes name an existing layer). Files are untrusted: ``load`` validates.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import KepFileError, UnsupportedError

# attribute type codes: "int", "float", "ints", "floats", "str"
_POOL = {"kernel_shape": "ints", "strides": "ints", "pads": "ints", "dilations": "ints",
         "ceil_mode": "int", "auto_pad": "str"}

#: op -> (attribute types, (min inputs, max inputs), number of outputs)
OPS: dict[str, tuple[dict[str, str], tuple[int, int], int]] = {
    # a conv layer of the SparseModel, optionally with a fused activation:
    # act "none" | "relu" | "clip" (clip_min/clip_max, after the kernel's relu when clip_min>=0)
    "SparseConv": ({"layer": "str", "act": "str", "clip_min": "float", "clip_max": "float"},
                   (1, 1), 1),
    "BatchNormalization": ({"epsilon": "float"}, (5, 5), 1),
    "Relu": ({}, (1, 1), 1),
    "Clip": ({}, (1, 3), 1),
    "LeakyRelu": ({"alpha": "float"}, (1, 1), 1),
    "Sigmoid": ({}, (1, 1), 1),
    "MaxPool": (dict(_POOL), (1, 1), 1),
    "AveragePool": ({**_POOL, "count_include_pad": "int"}, (1, 1), 1),
    "GlobalAveragePool": ({}, (1, 1), 1),
    "Add": ({}, (2, 2), 1),
    "Mul": ({}, (2, 2), 1),
    "Concat": ({"axis": "int"}, (1, 1 << 16), 1),
    "Flatten": ({"axis": "int"}, (1, 1), 1),
    "Reshape": ({"allowzero": "int"}, (2, 2), 1),
    "Gemm": ({"alpha": "float", "beta": "float", "transA": "int", "transB": "int"}, (2, 3), 1),
    "MatMul": ({}, (2, 2), 1),
    "Softmax": ({"axis": "int", "legacy": "int"}, (1, 1), 1),
    "Identity": ({}, (1, 1), 1),
    "Pad": ({"mode": "str"}, (2, 4), 1),
    "Slice": ({}, (3, 5), 1),
}

REQUIRED_ATTRS = {"SparseConv": ("layer",), "MaxPool": ("kernel_shape",),
                  "AveragePool": ("kernel_shape",)}

#: dtypes a graph tensor may have (numpy names); everything else is refused
DTYPES = ("float32", "float64", "float16", "int8", "int16", "int32", "int64",
          "uint8", "uint16", "uint32", "uint64", "bool")


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "attrs": dict(self.attrs)}


@dataclass
class Graph:
    inputs: list[dict]
    outputs: list[str]
    nodes: list[Node]
    constants: dict[str, np.ndarray] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"inputs": self.inputs, "outputs": self.outputs,
                "nodes": [n.to_json() for n in self.nodes],
                "constants": list(self.constants)}

    def consumers(self) -> dict[str, list[Node]]:
        use: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    use.setdefault(i, []).append(n)
        return use

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts


def _type_ok(value, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind in ("ints", "floats"):
        return isinstance(value, list) and all(_type_ok(v, kind[:-1]) for v in value)
    return False


def check_node_attrs(node: Node, err=UnsupportedError, **where) -> None:
    """Op known, attribute names and types right, input/output counts in range."""
    if not isinstance(node.op, str) or node.op not in OPS:
        raise err(f"op type {node.op!r} is not supported (supported: {', '.join(sorted(OPS))})",
                  layer=node.name, field="op", **where)
    types, (lo, hi), n_out = OPS[node.op]
    for k, v in node.attrs.items():
        if k not in types:
            raise err(f"{node.op}: attribute {k!r} is not supported", layer=node.name, field=k,
                      **where)
        if not _type_ok(v, types[k]):
            raise err(f"{node.op}: attribute {k!r} must be of type {types[k]}, got {v!r}",
                      layer=node.name, field=k, **where)
    for k in REQUIRED_ATTRS.get(node.op, ()):
        if k not in node.attrs:
            raise err(f"{node.op}: attribute {k!r} is required", layer=node.name, field=k,
                      **where)
    if not lo <= len(node.inputs) <= hi:
        raise err(f"{node.op} takes {lo}..{hi} inputs, got {len(node.inputs)}", layer=node.name,
                  field="inputs", **where)
    if len(node.outputs) != n_out:
        raise err(f"{node.op} has {n_out} output(s), got {len(node.outputs)}", layer=node.name,
                  field="outputs", **where)


def validate(graph: Graph, layer_names=(), err=KepFileError, **where) -> None:
    """Check the whole graph; raises ``err`` naming the node and field."""
    defined: set[str] = set()
    for spec in graph.inputs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise err(f"graph input entry {spec!r} is malformed", field="graph.inputs", **where)
        if spec.get("dtype") not in DTYPES:
            raise err(f"graph input {spec['name']!r} has unsupported dtype {spec.get('dtype')!r}",
                      field="graph.inputs", **where)
        shape = spec.get("shape")
        if shape is not None and not (isinstance(shape, list) and all(
                s is None or (isinstance(s, int) and not isinstance(s, bool) and s >= 0)
                for s in shape)):
            raise err(f"graph input {spec['name']!r} has a malformed shape {shape!r}",
                      field="graph.inputs", **where)
        defined.add(spec["name"])
    for name, arr in graph.constants.items():
        if str(arr.dtype) not in DTYPES:
            raise err(f"constant {name!r} has unsupported dtype {arr.dtype}", field="graph.constants",
                      **where)
        defined.add(name)
    names: set[str] = set()
    layer_names = set(layer_names)
    for i, node in enumerate(graph.nodes):
        if not isinstance(node.name, str) or not node.name:
            raise err("node has no name", layer=f"node #{i}", field="name", **where)
        if node.name in names:
            raise err("duplicate node name", layer=node.name, field="name", **where)
        names.add(node.name)
        check_node_attrs(node, err=err, **where)
        for inp in node.inputs:
            if inp and inp not in defined:
                raise err(f"input {inp!r} is not defined before this node (undefined tensor or "
                          "a cycle)", layer=node.name, field="inputs", **where)
        for out in node.outputs:
            if not out or out in defined:
                raise err(f"output {out!r} is empty or defined twice", layer=node.name,
                          field="outputs", **where)
            defined.add(out)
        if node.op == "SparseConv":
            if node.attrs["layer"] not in layer_names:
                raise err(f"names layer {node.attrs['layer']!r}, which the model does not have",
                          layer=node.name, field="layer", **where)
            if node.attrs.get("act", "none") not in ("none", "relu", "clip"):
                raise err(f"unknown fused activation {node.attrs['act']!r}", layer=node.name,
                          field="act", **where)
        if node.op == "Pad" and node.attrs.get("mode", "constant") not in (
                "constant", "reflect", "edge", "wrap"):
            raise err(f"Pad mode {node.attrs['mode']!r} is not supported", layer=node.name,
                      field="mode", **where)
        if node.op in ("MaxPool", "AveragePool"):
            check_pool_attrs(node, err=err, **where)
    if not graph.outputs:
        raise err("the graph has no outputs", field="graph.outputs", **where)
    for out in graph.outputs:
        if out not in defined:
            raise err(f"graph output {out!r} is never computed", field="graph.outputs", **where)


def check_pool_attrs(node: Node, err=UnsupportedError, **where) -> None:
    a = node.attrs
    k = a["kernel_shape"]
    if len(k) != 2:
        raise err(f"{node.op}: only 2-D pooling is supported (kernel_shape {k})", layer=node.name,
                  field="kernel_shape", **where)
    for key, n in (("strides", 2), ("dilations", 2), ("pads", 4)):
        if key in a and len(a[key]) != n:
            raise err(f"{node.op}: {key} must have {n} entries, got {a[key]}", layer=node.name,
                      field=key, **where)
    if min(k) < 1 or min(a.get("strides", [1])) < 1 or min(a.get("dilations", [1])) < 1 \
            or min(a.get("pads", [0])) < 0:
        raise err(f"{node.op}: kernel/strides/dilations must be >= 1 and pads >= 0",
                  layer=node.name, field="kernel_shape", **where)
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise err(f"{node.op}: auto_pad {a['auto_pad']!r} is not supported", layer=node.name,
                  field="auto_pad", **where)


def graph_from_json(doc, tensors: dict, used: set, layer_names, path) -> Graph:
    """The graph described by the JSON ``doc`` and the file's ``graph/constants/<i>`` tensors."""
    if not isinstance(doc, dict):
        raise KepFileError("graph description is not an object", path=path, field="graph")
    try:
        inputs, outputs = doc["inputs"], doc["outputs"]
        raw_nodes, const_names = doc["nodes"], doc["constants"]
        if not all(isinstance(v, list) for v in (inputs, outputs, raw_nodes, const_names)):
            raise TypeError("inputs/outputs/nodes/constants must be lists")
        if not all(isinstance(o, str) for o in outputs) or \
                not all(isinstance(c, str) for c in const_names):
            raise TypeError("output and constant names must be strings")
        nodes = []
        for i, n in enumerate(raw_nodes):
            if not isinstance(n, dict):
                raise TypeError(f"node #{i} is not an object")
            ins, outs, attrs = n.get("inputs"), n.get("outputs"), n.get("attrs", {})
            if not (isinstance(ins, list) and all(isinstance(s, str) for s in ins)
                    and isinstance(outs, list) and all(isinstance(s, str) for s in outs)
                    and isinstance(attrs, dict)):
                raise TypeError(f"node #{i} has malformed inputs/outputs/attrs")
            nodes.append(Node(n.get("name"), n.get("op"), ins, outs, attrs))
    except (KeyError, TypeError) as exc:
        raise KepFileError(f"graph description is malformed: {exc}", path=path,
                           field="graph") from None
    constants = {}
    for i, name in enumerate(const_names):
        key = f"graph/constants/{i}"
        if key not in tensors:
            raise KepFileError(f"constant {name!r} has no tensor {key!r}", path=path,
                               field="graph.constants")
        constants[name] = tensors[key]
        used.add(key)
    graph = Graph(inputs, outputs, nodes, constants)
    validate(graph, layer_names, err=KepFileError, path=path)
    return graph
