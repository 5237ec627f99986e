"""Pad and Slice bound to constant operands (ops.bind_constant_operands, the graph
runtime's path when pads/starts/... are initializers) give what the plain ops give, for
every input shape they meet, and raise the same errors at the call."""
from __future__ import annotations

import numpy as np
import pytest

from kepsparse.runtime import ops

PADS = [
    ([0, 8, 0, 0, 0, 8, 0, 0], None),          # ResNet-56's channel shortcut
    ([1, 0, 2, 3, 0, 1, 1, 0], None),
    ([0, 0, -1, 2, 0, 0, 3, -2], None),          # negative pads crop first
    ([0, 0, -9, 0, 0, 0, 0, -9], None),          # a crop larger than the axis
    ([2, -1], [3]),                               # axes
    ([1, 1], [-1]),
]


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("pads,axes", PADS)
def test_bound_pad_equals_pad(pads, axes, mode):
    a = {"mode": mode}
    consts = [None, np.array(pads, np.int64), None,
              None if axes is None else np.array(axes, np.int64)]
    bound = ops.bind_constant_operands("Pad", a, consts)
    for shape in [(1, 4, 6, 7), (2, 3, 5, 9), (1, 4, 6, 7)]:  # a shape seen before, again
        x = _x(shape)
        try:
            want = ops.pad(a, [x, *consts[1:]])
        except ValueError as exc:  # e.g. reflect on an axis cropped too short
            with pytest.raises(ValueError, match=str(exc)[:20]):
                bound(x)
            continue
        np.testing.assert_array_equal(bound(x), want)
    # against NumPy's own np.pad where no pad is negative (axes: every axis)
    if axes is None and min(pads) >= 0 and mode == "constant":
        x = _x((1, 4, 6, 7))
        np.testing.assert_array_equal(bound(x), np.pad(x, list(zip(pads[:4], pads[4:]))))


def test_bound_pad_with_a_value_keeps_negative_zero():
    consts = [None, np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), np.array(-0.0, np.float32)]
    y = ops.bind_constant_operands("Pad", {"mode": "constant"}, consts)(_x((1, 2, 3, 3)))
    assert np.signbit(y[0, 0, 0, 0]) and y[0, 0, 0, 0] == 0


SLICES = [
    ([0], [2**63 - 1], [2], [2]),                 # ResNet-56's x[:, :, ::2]
    ([1, -1], [-1, 0], [2, 3], [1, -1]),
    ([-100], [100], None, None),
    ([5], [1], [3], [-2]),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES)
def test_bound_slice_equals_slice(starts, ends, axes, steps):
    consts = [None, np.array(starts, np.int64), np.array(ends, np.int64),
              None if axes is None else np.array(axes, np.int64),
              None if steps is None else np.array(steps, np.int64)]
    bound = ops.bind_constant_operands("Slice", {}, consts)
    for shape in [(2, 3, 8, 9), (1, 2, 5, 4), (2, 3, 8, 9)]:
        x = _x(shape)
        np.testing.assert_array_equal(bound(x), ops.slice_({}, [x, *consts[1:]]))


def test_bound_ops_raise_at_the_call():
    bound = ops.bind_constant_operands(
        "Slice", {}, [None, np.array([0]), np.array([4]), np.array([1]), np.array([0])])
    with pytest.raises(ValueError, match="step 0"):
        bound(_x((1, 2, 3, 3)))
    bound = ops.bind_constant_operands("Pad", {"mode": "constant"}, [None, np.array([1, 1, 1])])
    with pytest.raises(ValueError, match="pads has 3 entries"):
        bound(_x((1, 2, 3, 3)))
    assert ops.bind_constant_operands("Relu", {}, [None]) is None
