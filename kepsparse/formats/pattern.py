"""``pattern`` format: KEP's shared-pattern format ("few indexes per non-zero").

Each kernel plane ``(o, c)`` is either empty or keeps exactly the positions of one pattern
from a small per-layer library of KH x KW masks. The indexes are the library plus one small
pattern id per plane; the values are packed densely.

Layout (arrays on disk):
    patterns   uint8 (P, KH, KW)  the library, entries 0/1. Row 0 is the empty pattern (all 0),
                                  rows 1..P-1 are distinct and non-empty, most used first.
    plane_ids  uint8 (ceil(O*C*B/8),)
                                  pattern id of every plane in (o, c) row-major order, each id
                                  B bits wide, bit-packed little-endian (id k occupies bits
                                  k*B .. k*B+B-1 of the byte stream, LSB first). B is the
                                  smallest of 1, 2, 4, 8, 16 with 2**B >= P; padding bits are 0.
    values     float32 (nnz,)     for every plane in (o, c) order, the weights at its pattern's
                                  positions in row-major (kh, kw) order; empty planes add none.
Index bytes = patterns + plane_ids. With P <= 16 an id is 4 bits: a 4-of-9 plane costs
16 value bytes and half an index byte.
"""
from __future__ import annotations

import numpy as np

from .base import (SparseFormat, as_dense_weight, as_mask, check_finite, check_shape,
                   expect_array)
from ..errors import FormatError

MAX_PATTERNS = 1 << 16  # ids up to 16 bits


def id_bits(n_patterns: int) -> int:
    """Bits per plane id for a library of ``n_patterns`` rows (the empty one included)."""
    for bits in (1, 2, 4, 8, 16):
        if n_patterns <= 1 << bits:
            return bits
    raise FormatError(f"{n_patterns} patterns exceed the maximum {MAX_PATTERNS}", field="patterns")


def pack_ids(ids: np.ndarray, bits: int) -> np.ndarray:
    """Bit-pack non-negative ids (< 2**bits), ``bits`` each, little-endian, into uint8."""
    ids = np.asarray(ids, dtype=np.uint32).reshape(-1)
    bitplanes = (ids[:, None] >> np.arange(bits, dtype=np.uint32)) & 1
    return np.packbits(bitplanes.astype(np.uint8).reshape(-1), bitorder="little")


def unpack_ids(packed: np.ndarray, count: int, bits: int) -> np.ndarray:
    """Inverse of ``pack_ids``: ``count`` ids as int64."""
    flat = np.unpackbits(packed, bitorder="little", count=count * bits)
    weights = np.left_shift(np.int64(1), np.arange(bits, dtype=np.int64))
    return flat.reshape(count, bits).astype(np.int64) @ weights


class PatternFormat(SparseFormat):
    name = "pattern"

    def __init__(self, shape, patterns, plane_ids, values):
        self.shape = check_shape(shape)
        self.patterns = patterns
        self.plane_ids = plane_ids
        self.values = values

    @classmethod
    def from_dense(cls, w, mask=None, max_patterns=None, **options) -> "PatternFormat":
        """Pack exactly. ``max_patterns`` bounds the non-empty library size (FormatError beyond)."""
        w = as_dense_weight(w)
        m = as_mask(mask, w)
        O, C, KH, KW = w.shape
        planes = m.reshape(O * C, KH * KW)
        uniq, inverse, counts = np.unique(planes, axis=0, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        nonempty = uniq.any(axis=1)
        limit = MAX_PATTERNS - 1 if max_patterns is None else int(max_patterns)
        if int(nonempty.sum()) > limit:
            raise FormatError(f"{int(nonempty.sum())} distinct kernel-plane patterns, more than "
                              f"the allowed {limit}", field="patterns")
        # library order: the empty pattern first, then most used first (ties: np.unique order)
        order = np.argsort(-counts * nonempty, kind="stable")
        order = order[nonempty[order]]
        library = np.zeros((len(order) + 1, KH * KW), dtype=np.uint8)
        library[1:] = uniq[order]
        new_id = np.zeros(len(uniq), dtype=np.int64)
        new_id[order] = np.arange(1, len(order) + 1)
        ids = new_id[inverse]
        values = w.reshape(O * C, KH * KW)[planes]  # row-major: (o, c) then (kh, kw)
        return cls(w.shape, library.reshape(-1, KH, KW), pack_ids(ids, id_bits(len(library))),
                   values.astype(np.float32))

    @classmethod
    def from_arrays(cls, shape, arrays) -> "PatternFormat":
        obj = cls(shape,
                  expect_array(arrays, "patterns", [np.uint8], 3),
                  expect_array(arrays, "plane_ids", [np.uint8], 1),
                  expect_array(arrays, "values", [np.float32], 1))
        obj.validate()
        return obj

    def arrays(self):
        return {"patterns": self.patterns, "plane_ids": self.plane_ids, "values": self.values}

    @property
    def n_patterns(self) -> int:
        """Library rows, the empty pattern included."""
        return int(self.patterns.shape[0])

    @property
    def bits_per_id(self) -> int:
        return id_bits(self.n_patterns)

    def validate(self) -> None:
        O, C, KH, KW = check_shape(self.shape)
        lib = self.patterns
        P = lib.shape[0]
        if lib.shape[1:] != (KH, KW):
            raise FormatError(f"library planes are {lib.shape[1:]}, kernel is {(KH, KW)}",
                              field="patterns")
        if not 1 <= P <= MAX_PATTERNS:
            raise FormatError(f"{P} library rows, must be 1..{MAX_PATTERNS}", field="patterns")
        if np.any(lib > 1):
            raise FormatError("entries must be 0 or 1", field="patterns")
        flat = lib.reshape(P, -1)
        if flat[0].any():
            raise FormatError("row 0 must be the empty pattern", field="patterns")
        if not flat[1:].any(axis=1).all():
            raise FormatError("rows 1.. must be non-empty", field="patterns")
        if len(np.unique(flat, axis=0)) != P:
            raise FormatError("duplicate patterns in the library", field="patterns")
        bits = id_bits(P)
        n_planes = O * C
        n_bytes = -(-n_planes * bits // 8)
        if self.plane_ids.shape != (n_bytes,):
            raise FormatError(f"{self.plane_ids.shape[0]} bytes, {n_planes} planes of {bits}-bit "
                              f"ids need {n_bytes}", field="plane_ids")
        padding = np.unpackbits(self.plane_ids, bitorder="little")[n_planes * bits:]
        if padding.any():
            raise FormatError("padding bits after the last id are not 0", field="plane_ids")
        ids = unpack_ids(self.plane_ids, n_planes, bits)
        if n_planes and int(ids.max()) >= P:
            raise FormatError(f"pattern id {int(ids.max())} out of range (library has {P} rows)",
                              field="plane_ids")
        expected = int(flat.sum(axis=1, dtype=np.int64)[ids].sum())
        if self.values.shape != (expected,):
            raise FormatError(f"{self.values.shape[0]} values but the planes' patterns keep "
                              f"{expected}", field="values")
        check_finite(self.values)

    def ids(self) -> np.ndarray:
        """Unpacked pattern id of every plane, int64 (O, C)."""
        O, C = self.shape[:2]
        return unpack_ids(self.plane_ids, O * C, self.bits_per_id).reshape(O, C)

    def kept_mask(self):
        return self.patterns[self.ids()].astype(bool)

    def coo(self):
        o, c, kh, kw = np.nonzero(self.kept_mask())  # row-major = the values' order
        return o, c, kh, kw, self.values

    def pattern_usage(self) -> np.ndarray:
        """Planes using each library row (row 0: empty planes), int64 (P,)."""
        return np.bincount(self.ids().reshape(-1), minlength=self.n_patterns)

    @property
    def index_bytes(self):
        return int(self.patterns.nbytes + self.plane_ids.nbytes)
