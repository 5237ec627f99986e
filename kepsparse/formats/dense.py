"""``dense`` format: the weight as it is, for layers not sparse enough to pay.

Layout (arrays on disk):
    values  float32 (O, C, KH, KW)   C-contiguous, every position stored.
Index bytes are 0.
"""
from __future__ import annotations

import numpy as np

from .base import SparseFormat, as_dense_weight, check_finite, check_shape, expect_array
from ..errors import FormatError


class DenseFormat(SparseFormat):
    name = "dense"

    def __init__(self, values: np.ndarray):
        self.values = values
        self.shape = tuple(int(d) for d in values.shape)

    @classmethod
    def from_dense(cls, w, mask=None, **options) -> "DenseFormat":
        w = as_dense_weight(w)
        if mask is not None:  # a mask only says which positions are kept: dense keeps all
            w = np.where(np.asarray(mask) != 0, w, np.float32(0))
        return cls(w.copy())

    @classmethod
    def from_arrays(cls, shape, arrays) -> "DenseFormat":
        obj = cls(expect_array(arrays, "values", [np.float32], 4))
        if obj.shape != check_shape(shape):
            raise FormatError(f"shape {obj.shape} differs from declared {tuple(shape)}", field="values")
        obj.validate()
        return obj

    def arrays(self):
        return {"values": self.values}

    def validate(self) -> None:
        check_shape(self.shape)
        if self.values.dtype != np.float32 or self.values.ndim != 4:
            raise FormatError("must be a 4-D float32 array", field="values")
        check_finite(self.values)

    def kept_mask(self):
        return np.ones(self.shape, dtype=bool)

    def coo(self):
        o, c, kh, kw = np.indices(self.shape).reshape(4, -1)
        return o, c, kh, kw, self.values.reshape(-1)

    def to_dense(self):
        return self.values.copy()

    @property
    def nnz(self):
        # Every position is stored; nnz reports the true non-zeros so that a dense layer
        # still shows how sparse it is.
        return int(np.count_nonzero(self.values))

    @property
    def index_bytes(self):
        return 0
