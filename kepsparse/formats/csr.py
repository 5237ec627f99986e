"""``csr`` format: element-level sparsity, one compressed row per output channel.

Each output channel ``o`` is a row over the flattened input index
``j = (c * KH + kh) * KW + kw`` (c: input channel, kh/kw: kernel position). Handles any
sparsity pattern.

Layout (arrays on disk):
    indptr   int32  (O + 1,)  row pointers: row o's entries are [indptr[o], indptr[o+1]);
                              indptr[0] == 0, non-decreasing, indptr[O] == nnz.
    indices  uint16 (nnz,)    j of each entry, strictly increasing within a row, < C*KH*KW;
             or uint32        uint16 when C*KH*KW <= 65536, else uint32.
    values   float32 (nnz,)   the weights, same order as indices.
Index bytes = indptr + indices.
"""
from __future__ import annotations

import numpy as np

from .base import (SparseFormat, as_dense_weight, as_mask, check_finite, check_shape,
                   expect_array)
from ..errors import FormatError


def index_dtype(row_length: int) -> np.dtype:
    """Smallest unsigned dtype that holds every column index of a row of this length."""
    return np.dtype(np.uint16) if row_length <= 1 << 16 else np.dtype(np.uint32)


class CSRFormat(SparseFormat):
    name = "csr"

    def __init__(self, shape, indptr, indices, values):
        self.shape = check_shape(shape)
        self.indptr = indptr
        self.indices = indices
        self.values = values

    @classmethod
    def from_dense(cls, w, mask=None, **options) -> "CSRFormat":
        w = as_dense_weight(w)
        m = as_mask(mask, w)
        O = w.shape[0]
        flat_m = m.reshape(O, -1)
        rows, cols = np.nonzero(flat_m)  # row-major: rows sorted, cols increasing per row
        indptr = np.zeros(O + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=O), out=indptr[1:])
        if indptr[-1] >= 2**31:
            raise FormatError("more than 2**31 - 1 non-zeros in one layer", field="indptr")
        return cls(w.shape, indptr.astype(np.int32),
                   cols.astype(index_dtype(flat_m.shape[1])),
                   w.reshape(O, -1)[rows, cols].astype(np.float32))

    @classmethod
    def from_arrays(cls, shape, arrays) -> "CSRFormat":
        obj = cls(shape,
                  expect_array(arrays, "indptr", [np.int32], 1),
                  expect_array(arrays, "indices", [np.uint16, np.uint32], 1),
                  expect_array(arrays, "values", [np.float32], 1))
        obj.validate()
        return obj

    def arrays(self):
        return {"indptr": self.indptr, "indices": self.indices, "values": self.values}

    def validate(self) -> None:
        O, C, KH, KW = check_shape(self.shape)
        row_length = C * KH * KW
        ip, ix, v = self.indptr, self.indices, self.values
        if ip.shape != (O + 1,):
            raise FormatError(f"length {ip.shape[0]} != O + 1 = {O + 1}", field="indptr")
        if ip[0] != 0:
            raise FormatError(f"indptr[0] is {ip[0]}, must be 0", field="indptr")
        if np.any(np.diff(ip.astype(np.int64)) < 0):
            raise FormatError("row pointers decrease", field="indptr")
        nnz = int(ip[-1])
        if ix.shape != (nnz,):
            raise FormatError(f"{ix.shape[0]} entries but indptr[-1] = {nnz}", field="indices")
        if v.shape != (nnz,):
            raise FormatError(f"{v.shape[0]} entries but indptr[-1] = {nnz}", field="values")
        if ix.dtype != index_dtype(row_length):
            raise FormatError(f"dtype {ix.dtype} but rows of length {row_length} use "
                              f"{index_dtype(row_length)}", field="indices")
        if nnz and int(ix.max()) >= row_length:
            raise FormatError(f"index {int(ix.max())} out of range (C*KH*KW = {row_length})",
                              field="indices")
        # strictly increasing inside each row: a step <= 0 is allowed only where a row starts
        steps = np.diff(ix.astype(np.int64))
        row_starts = np.zeros(max(nnz - 1, 0), dtype=bool)
        starts = ip[1:-1].astype(np.int64) - 1
        row_starts[starts[(starts >= 0) & (starts < nnz - 1)]] = True
        if np.any((steps <= 0) & ~row_starts):
            raise FormatError("indices not strictly increasing within a row (duplicate or unsorted)",
                              field="indices")
        check_finite(v)

    def kept_mask(self):
        O = self.shape[0]
        m = np.zeros((O, int(np.prod(self.shape[1:]))), dtype=bool)
        m[self.row_of_entry(), self.indices.astype(np.int64)] = True
        return m.reshape(self.shape)

    def row_of_entry(self) -> np.ndarray:
        """Output channel of every stored entry (int64, length nnz)."""
        return np.repeat(np.arange(self.shape[0]), np.diff(self.indptr.astype(np.int64)))

    def coo(self):
        _, C, KH, KW = self.shape
        c, kh, kw = np.unravel_index(self.indices.astype(np.int64), (C, KH, KW))
        return self.row_of_entry(), c, kh, kw, self.values

    @property
    def index_bytes(self):
        return int(self.indptr.nbytes + self.indices.nbytes)
