"""Sparse weight formats: one class per format (see each module's header for its layout).

``FORMATS`` maps a format's name to its class; ``pack`` chooses and builds one.
"""
from __future__ import annotations

import numpy as np

from .base import SparseFormat, as_dense_weight, as_mask
from .csr import CSRFormat
from .dense import DenseFormat
from .pattern import PatternFormat
from ..errors import FormatError

FORMATS: dict[str, type[SparseFormat]] = {
    cls.name: cls for cls in (DenseFormat, CSRFormat, PatternFormat)
}

#: Layers sparser than this are stored sparse by ``pack(..., "auto")``.
DEFAULT_MIN_SPARSITY = 0.5


def pack(w, format: str = "auto", mask=None, min_sparsity: float = DEFAULT_MIN_SPARSITY,
         max_patterns: int | None = None) -> SparseFormat:
    """Pack a dense weight into ``format`` (a name from FORMATS, or ``"auto"``).

    ``auto``: a layer whose sparsity (kept positions) is below ``min_sparsity`` stays dense;
    otherwise the sparse format with the fewest bytes (values + indexes) is chosen. Every
    choice is exact. Naming ``csr`` or ``pattern`` packs in that format regardless of sparsity.
    """
    w = as_dense_weight(w)
    m = as_mask(mask, w)
    if format != "auto":
        if format not in FORMATS:
            raise FormatError(f"unknown format {format!r}; choose from auto, {', '.join(FORMATS)}",
                              field="format")
        return FORMATS[format].from_dense(w, mask=m, max_patterns=max_patterns)
    if not 0.0 <= min_sparsity <= 1.0:
        raise FormatError(f"min_sparsity must be in [0, 1], got {min_sparsity}", field="min_sparsity")
    sparsity = 1.0 - float(m.sum()) / m.size
    if sparsity < min_sparsity:
        return DenseFormat.from_dense(w, mask=m)
    candidates: list[SparseFormat] = [CSRFormat.from_dense(w, mask=m)]
    try:
        candidates.append(PatternFormat.from_dense(w, mask=m, max_patterns=max_patterns))
    except FormatError:  # too many distinct patterns for the library limit
        pass
    return min(candidates, key=lambda f: f.nbytes)


__all__ = ["FORMATS", "SparseFormat", "DenseFormat", "CSRFormat", "PatternFormat", "pack",
           "DEFAULT_MIN_SPARSITY"]
