"""``SparseModel``: named sparse conv layers, what ``convert`` makes and a .kep file holds."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .conv import as_input, check_operands, run_conv
from .errors import FormatError, InputError
from .formats import SparseFormat
from .geometry import ConvGeometry


@dataclass
class SparseConv:
    """One convolution layer: packed weight, optional bias, geometry.

    ``geometry`` is None when the source did not record it (a bare state_dict holds only
    tensors); such a layer is run by passing ``stride``/``padding``/... explicitly.
    """
    name: str
    weight: SparseFormat
    bias: np.ndarray | None = None
    geometry: ConvGeometry | None = None

    @property
    def shape(self):
        return self.weight.shape

    def validate(self) -> None:
        """Layer-level invariants (the weight's own arrays are its format's to validate):
        bias float32 (O,) and finite; groups divide O. FormatError naming the field."""
        O = self.weight.shape[0]
        if self.bias is not None:
            b = self.bias
            if not isinstance(b, np.ndarray) or b.dtype != np.float32 or b.shape != (O,):
                raise FormatError(f"must be float32 ({O},), got "
                                  f"{getattr(b, 'dtype', type(b).__name__)} {np.shape(b)}",
                                  layer=self.name, field="bias")
            if not np.all(np.isfinite(b)):
                raise FormatError("holds NaN or Inf", layer=self.name, field="bias")
        if self.geometry is not None and O % self.geometry.groups:
            raise FormatError(f"groups={self.geometry.groups} does not divide {O} output channels",
                              layer=self.name, field="groups")

    def __call__(self, x, backend: str = "reference", relu: bool = False, threads=None,
                 **geometry_kwargs) -> np.ndarray:
        if geometry_kwargs:
            geometry = ConvGeometry.make(**geometry_kwargs)
        elif self.geometry is not None:
            geometry = self.geometry
        else:
            raise InputError("stride/padding/dilation were not recorded in the source "
                             "(a bare state_dict); pass them explicitly", layer=self.name,
                             field="geometry")
        x = as_input(x)
        b = check_operands(x, self.weight, self.bias, geometry, layer=self.name)
        return run_conv(self.weight, x, b, geometry, backend, relu, threads)

    def summary(self) -> dict:
        w = self.weight
        return {"name": self.name, "shape": list(w.shape), "format": w.name, "nnz": w.nnz,
                "sparsity": round(w.sparsity, 6), "value_bytes": w.value_bytes,
                "index_bytes": w.index_bytes,
                "geometry": None if self.geometry is None else self.geometry.to_json()}


@dataclass
class SparseModel:
    """Named sparse conv layers in source order, plus free-form metadata (source, ...)."""
    layers: dict[str, SparseConv] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def add(self, layer: SparseConv) -> None:
        if layer.name in self.layers:
            raise FormatError("two layers have this name", layer=layer.name, field="name")
        layer.validate()
        self.layers[layer.name] = layer

    def __getitem__(self, name: str) -> SparseConv:
        if name not in self.layers:
            raise KeyError(f"no layer {name!r}; layers: {', '.join(self.layers)}")
        return self.layers[name]

    def __iter__(self):
        return iter(self.layers.values())

    def __len__(self):
        return len(self.layers)

    def summary(self) -> dict:
        rows = [layer.summary() for layer in self]
        total = sum(int(np.prod(r["shape"])) for r in rows)
        nnz = sum(r["nnz"] for r in rows)
        return {"layers": rows, "totals": {
            "layers": len(rows), "weights": total, "nnz": nnz,
            "sparsity": round(1 - nnz / total, 6) if total else 0.0,
            "value_bytes": sum(r["value_bytes"] for r in rows),
            "index_bytes": sum(r["index_bytes"] for r in rows),
            "dense_bytes": 4 * total}}
