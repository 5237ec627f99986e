"""The package's exception hierarchy.

Every error a user can provoke with bad input is one of these. Each carries the file, the
layer and the field it is about (where known) and puts them at the front of its message,
so ``str(err)`` reads e.g. ``model.kep: layer 'conv2': field 'indices': index 99 out of range``.
"""
from __future__ import annotations


class KepError(Exception):
    """Base class of every kepsparse error."""

    def __init__(self, message: str, *, path=None, layer=None, field=None):
        self.message = message
        self.path = None if path is None else str(path)
        self.layer = layer
        self.field = field
        super().__init__(self._compose())

    def _compose(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(self.path)
        if self.layer is not None:
            parts.append(f"layer {self.layer!r}")
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        parts.append(self.message)
        return ": ".join(parts)

    def located(self, *, path=None, layer=None):
        """Return this error with the path/layer filled in where it was not yet known."""
        if path is not None and self.path is None:
            self.path = str(path)
        if layer is not None and self.layer is None:
            self.layer = layer
        self.args = (self._compose(),)
        return self


class FormatError(KepError):
    """A sparse format's arrays are inconsistent (bad index, count, shape or dtype)."""


class KepFileError(KepError):
    """A .kep file is missing, truncated, corrupted, or of an unknown format/version."""


class ConvertError(KepError):
    """A source model/checkpoint cannot be converted (missing, unsafe, no conv weights, ...)."""


class UnsupportedError(KepError):
    """A layer, operator or attribute that kepsparse does not support."""


class InputError(KepError):
    """A tensor passed to a kernel or model has the wrong shape, dtype or layout."""


class BackendUnavailableError(KepError):
    """The requested backend is not available on this machine (with the reason)."""
