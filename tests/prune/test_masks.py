"""KEP mask selection (NumPy only): every chosen mask lies in its constraint set."""
from __future__ import annotations

import numpy as np
import pytest

from kepsparse.errors import InputError
from kepsparse.formats import PatternFormat
from kepsparse.prune.masks import budget, random_masks, select_mask, select_masks


def _w(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.8, 0.9, 0.97])
@pytest.mark.parametrize("P,k", [(1, 4), (3, None), (8, 2), (8, None)])
@pytest.mark.parametrize("keep_center", [False, True])
def test_plane_masks_respect_library_and_budget(rng, sparsity, P, k, keep_center):
    w = _w(rng, (24, 10, 3, 3))
    lm = select_mask(w, sparsity, scope="plane", n_patterns=P, keep_per_pattern=k,
                     keep_center=keep_center)
    m = lm.mask
    assert m.shape == w.shape and m.dtype == bool
    kept = int(m.sum())
    assert kept <= max(budget(w.size, sparsity), lm.keep_per_pattern)  # at most (1-p) kept
    planes = m.reshape(-1, 9)
    nonempty = planes[planes.any(axis=1)]
    # every non-empty plane is a library pattern; the library has <= P patterns of k positions
    lib = lm.library.reshape(-1, 9)
    assert 1 <= len(lib) <= P
    assert (lib.sum(axis=1) == lm.keep_per_pattern).all()
    assert len(np.unique(nonempty, axis=0)) <= P
    for row in np.unique(nonempty, axis=0):
        assert (lib == row).all(axis=1).any()
    assert lm.usage.sum() == len(nonempty)
    if keep_center:
        assert nonempty[:, 4].all()
    # the pattern format sees the same library: few indexes
    fmt = PatternFormat.from_dense(np.where(m, w, 0), mask=m)
    assert fmt.n_patterns - 1 == len(np.unique(nonempty, axis=0))


def test_plane_scope_hits_the_rate_by_emptying_the_weakest_planes(rng):
    w = _w(rng, (32, 16, 3, 3))
    w[0] *= 100.0  # filter 0's planes are the strongest: they must all survive
    lm = select_mask(w, 0.8, scope="plane", n_patterns=8, keep_per_pattern=4)
    assert 0.8 <= lm.sparsity < 0.8 + 4 / w.size + 1e-9
    assert lm.mask[0].any(axis=(1, 2)).all()
    assert lm.empty_planes == 32 * 16 - budget(w.size, 0.8) // 4


def test_plane_pattern_keeps_the_most_norm(rng):
    # a single plane with a clear top-4: with P=1 the library is exactly that set
    w = np.zeros((1, 1, 3, 3), np.float32)
    w[0, 0] = [[9, 0.1, 8], [0.2, 7, 0.3], [6, 0.1, 0.2]]
    lm = select_mask(w, 0.5, scope="plane", n_patterns=1, keep_per_pattern=4)
    assert lm.mask[0, 0].tolist() == [[True, False, True], [False, True, False], [True, False, False]]
    l1 = select_mask(-w, 0.5, scope="plane", n_patterns=1, keep_per_pattern=4, metric="l1")
    assert (l1.mask == lm.mask).all()


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
def test_filter_scope_gives_stripes(rng, sparsity):
    w = _w(rng, (16, 8, 3, 3))
    lm = select_mask(w, sparsity, scope="filter", keep_center=True)
    m = lm.mask
    assert (m == m[:, :1]).all()                 # one position set per filter, shared by all c
    assert m.sum() <= max(budget(w.size, sparsity), 8)
    assert m.sum() % 8 == 0
    assert lm.library is None


def test_filter_scope_keep_center(rng):
    w = _w(rng, (16, 8, 3, 3))
    w[:, :, 1, 1] = 1e-6                         # centres are the weakest, still kept
    m = select_mask(w, 0.8, scope="filter", keep_center=True).mask
    assert m[:, :, 1, 1].all()
    assert not select_mask(w, 0.8, scope="filter").mask[:, :, 1, 1].any()


def test_layer_scope_shares_positions_and_keeps_a_unit(rng):
    w = _w(rng, (8, 8, 3, 3))
    m = select_mask(w, 0.6, scope="layer").mask
    assert (m == m[:1, :1]).all() and m[0, 0].sum() == 3
    m = select_mask(w, 0.95, scope="layer").mask  # below one unit: the layer keeps one position
    assert m[0, 0].sum() == 1


@pytest.mark.parametrize("scope", ["plane", "filter", "layer"])
def test_global_target_meets_one_budget_and_keeps_every_layer(rng, scope):
    ws = {"a": _w(rng, (16, 8, 3, 3)), "b": 0.1 * _w(rng, (32, 16, 3, 3)),
          "c": _w(rng, (32, 32, 3, 3))}
    total = sum(w.size for w in ws.values())
    masks = select_masks(ws, 0.8, scope=scope, global_target=True)
    kept = sum(int(lm.mask.sum()) for lm in masks.values())
    assert kept <= budget(total, 0.8)
    assert kept >= budget(total, 0.8) - max(w.shape[0] * w.shape[1] for w in ws.values())
    assert all(lm.mask.any() for lm in masks.values())
    # the layer with 10x smaller weights loses more
    assert masks["b"].sparsity > masks["c"].sparsity


def test_per_layer_dict_rates(rng):
    ws = {"a": _w(rng, (8, 8, 3, 3)), "b": _w(rng, (8, 8, 3, 3))}
    masks = select_masks(ws, {"a": 0.5, "b": 0.9})
    assert masks["a"].target_sparsity == 0.5 and masks["b"].target_sparsity == 0.9
    assert masks["b"].sparsity > masks["a"].sparsity


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), "x"])
def test_impossible_sparsity_is_named(rng, bad):
    with pytest.raises(InputError, match="sparsity"):
        select_mask(_w(rng, (4, 4, 3, 3)), bad)


def test_bad_options_are_named(rng):
    w = _w(rng, (4, 4, 3, 3))
    with pytest.raises(InputError, match="scope"):
        select_mask(w, 0.5, scope="row")
    with pytest.raises(InputError, match="metric"):
        select_mask(w, 0.5, metric="l3")
    with pytest.raises(InputError, match="patterns"):
        select_mask(w, 0.5, n_patterns=0)
    with pytest.raises(InputError, match="layer 'x'.*4-D"):
        select_masks({"x": np.zeros((3, 3), np.float32)}, 0.5)
    with pytest.raises(InputError, match="unknown layer"):
        select_masks({"a": w}, {"zz": 0.5})
    with pytest.raises(InputError, match="no conv weights"):
        select_masks({}, 0.5)


def test_random_masks_match_the_budget(rng):
    ws = {"a": _w(rng, (8, 8, 3, 3))}
    m = random_masks(ws, 0.8, seed=1)["a"]
    assert m.sum() == budget(m.size, 0.8)


def test_pattern_library_first_pass_has_no_nan(rng):
    """best starts at -inf: the first pass always runs and the stop test never compares with
    -inf + inf (NaN; a RuntimeWarning with NumPy scalars)."""
    import warnings

    from kepsparse.prune.masks import pattern_library
    imp = np.abs(_w(rng, (40, 9)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lib = pattern_library(imp, 4, 3)
    assert lib.shape[1] == 9 and 1 <= len(lib) <= 3 and set(lib.sum(1)) == {4}
    assert len(pattern_library(np.zeros((5, 9)), 4, 2)) >= 1  # all-zero importances: stops at once
