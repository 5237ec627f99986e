"""Convolution geometry: stride, padding, dilation, groups, and the output size they give."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


#: Every stride, padding and dilation must fit the kernels' int32 arguments.
MAX_GEOMETRY_VALUE = 2**31 - 1


def _int(v, name: str, value) -> int:
    """int(v), refusing what is not a finite integer or does not fit int32."""
    try:
        i = int(v)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
        raise InputError(f"{name} must be integers, got {value!r}", field=name) from None
    if isinstance(v, float) and v != i:
        raise InputError(f"{name} must be integers, got {value!r}", field=name)
    if abs(i) > MAX_GEOMETRY_VALUE:
        raise InputError(f"{name} {value!r} is out of range (|value| <= 2**31 - 1)", field=name)
    return i


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, (int,)) or (hasattr(value, "__index__") and not isinstance(value, bool)):
        i = _int(value, name, value)
        return i, i
    try:
        raw = tuple(value)
    except TypeError:
        raise InputError(f"{name} must be an int or a pair of ints, got {value!r}", field=name) from None
    if len(raw) != 2:
        raise InputError(f"{name} must be an int or a pair of ints, got {value!r}", field=name)
    return tuple(_int(v, name, value) for v in raw)


def _padding(value) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from an int, a (ph, pw) pair, or a 4-tuple (t, b, l, r)."""
    if not isinstance(value, (int,)) and hasattr(value, "__len__") and len(value) == 4:
        return tuple(_int(v, "padding", value) for v in value)
    ph, pw = _pair(value, "padding")
    return ph, ph, pw, pw


_MADE: dict = {}  # ConvGeometry.make's cache (geometries are immutable)


@dataclass(frozen=True)
class ConvGeometry:
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @classmethod
    def make(cls, stride=1, padding=0, dilation=1, groups=1) -> "ConvGeometry":
        """The geometry of these arguments, validated. Plain ints and tuples of ints (the
        common case, e.g. every ``conv2d`` call) are answered from a small cache."""
        key = (stride, padding, dilation, groups)
        if all(type(v) is int or (type(v) is tuple and all(type(e) is int for e in v))
               for v in key):
            g = _MADE.get(key)
            if g is None:
                g = cls._make(stride, padding, dilation, groups)
                if len(_MADE) < 256:
                    _MADE[key] = g
            return g
        return cls._make(stride, padding, dilation, groups)

    @classmethod
    def _make(cls, stride, padding, dilation, groups) -> "ConvGeometry":
        g = cls(_pair(stride, "stride"), _padding(padding), _pair(dilation, "dilation"),
                _int(groups, "groups", groups))
        if min(g.stride) < 1:
            raise InputError(f"stride must be >= 1, got {g.stride}", field="stride")
        if min(g.dilation) < 1:
            raise InputError(f"dilation must be >= 1, got {g.dilation}", field="dilation")
        if min(g.padding) < 0:
            raise InputError(f"padding must be >= 0, got {g.padding}", field="padding")
        if g.groups < 1:
            raise InputError(f"groups must be >= 1, got {g.groups}", field="groups")
        return g

    def output_size(self, H: int, W: int, KH: int, KW: int) -> tuple[int, int]:
        """(Ho, Wo); InputError if the padded input is smaller than the dilated kernel."""
        pt, pb, pl, pr = self.padding
        (sh, sw), (dh, dw) = self.stride, self.dilation
        span_h, span_w = dh * (KH - 1) + 1, dw * (KW - 1) + 1
        Hp, Wp = H + pt + pb, W + pl + pr
        if Hp < span_h or Wp < span_w:
            raise InputError(f"padded input {Hp}x{Wp} is smaller than the dilated kernel "
                             f"{span_h}x{span_w}", field="input")
        return (Hp - span_h) // sh + 1, (Wp - span_w) // sw + 1

    def to_json(self) -> dict:
        return {"stride": list(self.stride), "padding": list(self.padding),
                "dilation": list(self.dilation), "groups": self.groups}

    @classmethod
    def from_json(cls, d: dict) -> "ConvGeometry":
        return cls.make(d["stride"], d["padding"], d["dilation"], d["groups"])
