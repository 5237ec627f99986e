"""Common interface of the sparse weight formats.

A format object holds one convolution weight of logical shape ``(O, C, KH, KW)``
(output channels, input channels per group, kernel height, kernel width) in some packed
layout. Every format:

- ``from_dense(w, mask=None)``: pack a dense float32 array exactly. ``mask`` (same shape, bool)
  says which positions are kept; by default the non-zeros. A kept position may hold 0.0
  (e.g. a ``torch.nn.utils.prune`` mask over a weight that happens to be zero).
- ``to_dense()``: the dense float32 array back; ``to_dense(from_dense(w)) == w`` bit for bit.
- ``kept_mask()``: bool ``(O, C, KH, KW)``, the stored positions.
- ``coo()``: ``(o, c, kh, kw, value)`` arrays of the stored entries in the format's own order.
- ``arrays()`` / ``from_arrays(shape, arrays)``: the named arrays that are the format on disk.
- ``validate()``: check every invariant of the layout; raises ``FormatError`` naming the field.
  ``from_arrays`` always validates: arrays from files are untrusted.
- byte account: ``value_bytes``, ``index_bytes``, ``nbytes``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..errors import FormatError


MAX_WEIGHT_ELEMENTS = 2**31


def check_shape(shape) -> tuple[int, int, int, int]:
    """A weight shape as four positive ints, or FormatError."""
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
        raise FormatError(f"weight shape must be 4 integers (O, C, KH, KW), got {shape!r}",
                          field="shape") from None
    if len(dims) != 4 or any(d <= 0 for d in dims):
        raise FormatError(f"weight shape must be 4 positive integers (O, C, KH, KW), got {shape!r}",
                          field="shape")
    # a few bytes of a file must not declare a terabyte layer; kernels index in int32
    if dims[0] * dims[1] * dims[2] * dims[3] >= MAX_WEIGHT_ELEMENTS:
        raise FormatError(f"weight shape {dims} has more than 2**31 - 1 elements", field="shape")
    return dims


def as_dense_weight(w) -> np.ndarray:
    """A dense 4-D float32 C-contiguous weight, or FormatError."""
    arr = np.asarray(w)
    if arr.ndim != 4:
        raise FormatError(f"a conv weight must be 4-D (O, C, KH, KW), got shape {arr.shape}",
                          field="weight")
    check_shape(arr.shape)
    if not np.issubdtype(arr.dtype, np.floating):
        raise FormatError(f"a conv weight must be floating point, got {arr.dtype}", field="weight")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise FormatError("weight holds NaN or Inf", field="weight")
    return arr


def as_mask(mask, w: np.ndarray) -> np.ndarray:
    """The kept-position mask for ``w``: given, or the non-zeros. Values outside it must be 0."""
    if mask is None:
        return w != 0
    m = np.asarray(mask)
    if m.shape != w.shape:
        raise FormatError(f"mask shape {m.shape} differs from weight shape {w.shape}", field="mask")
    m = m != 0
    if np.any(w[~m] != 0):
        raise FormatError("weight has non-zeros outside the mask", field="mask")
    return m


def expect_array(arrays: dict, name: str, dtypes, ndim: int) -> np.ndarray:
    """Fetch ``arrays[name]`` checking dtype (one of ``dtypes``) and rank; FormatError otherwise."""
    if name not in arrays:
        raise FormatError("missing", field=name)
    a = np.asarray(arrays[name])
    allowed = tuple(np.dtype(d) for d in dtypes)
    if a.dtype not in allowed:
        raise FormatError(f"dtype {a.dtype} not in {[str(d) for d in allowed]}", field=name)
    if a.ndim != ndim:
        raise FormatError(f"expected {ndim}-D array, got shape {a.shape}", field=name)
    return np.ascontiguousarray(a)


def check_finite(values: np.ndarray, field: str = "values") -> None:
    if not np.all(np.isfinite(values)):
        raise FormatError("holds NaN or Inf", field=field)


class SparseFormat(ABC):
    """Base class: a packed conv weight of logical shape ``(O, C, KH, KW)``."""

    name: str = ""

    shape: tuple[int, int, int, int]
    values: np.ndarray  # float32: the stored weights, in the format's own order

    @classmethod
    @abstractmethod
    def from_dense(cls, w, mask=None, **options) -> "SparseFormat": ...

    @classmethod
    @abstractmethod
    def from_arrays(cls, shape, arrays: dict) -> "SparseFormat": ...

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def validate(self) -> None: ...

    @abstractmethod
    def kept_mask(self) -> np.ndarray: ...

    @abstractmethod
    def coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...

    @property
    @abstractmethod
    def index_bytes(self) -> int: ...

    def to_dense(self) -> np.ndarray:
        o, c, kh, kw, v = self.coo()
        w = np.zeros(self.shape, dtype=np.float32)
        w[o, c, kh, kw] = v
        return w

    @property
    def nnz(self) -> int:
        """Stored entries (kept positions): one float32 value each."""
        return int(self.values.size)

    @property
    def value_bytes(self) -> int:
        return int(self.values.nbytes)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / self.size

    @property
    def nbytes(self) -> int:
        return self.value_bytes + self.index_bytes

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(shape={self.shape}, nnz={self.nnz}, "
                f"sparsity={self.sparsity:.3f}, bytes={self.value_bytes}+{self.index_bytes})")
