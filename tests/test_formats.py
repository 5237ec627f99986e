"""Every format round-trips exactly, validates what it must, and accounts its bytes."""
from __future__ import annotations

import numpy as np
import pytest

import kepsparse as ks
from kepsparse.formats import FORMATS, pack
from kepsparse.formats.pattern import id_bits, pack_ids, unpack_ids
from kepsparse.testing import edge_case_weights, make_kep_weight

WEIGHTS = list(edge_case_weights())
IDS = [label for label, _ in WEIGHTS]


@pytest.mark.parametrize("fmt_name", list(FORMATS))
@pytest.mark.parametrize("label,w", WEIGHTS, ids=IDS)
def test_round_trip_exact(fmt_name, label, w):
    fmt = FORMATS[fmt_name].from_dense(w)
    fmt.validate()
    back = fmt.to_dense()
    assert back.dtype == np.float32 and back.shape == w.shape
    assert np.array_equal(back, w)
    # through the on-disk arrays as well
    again = FORMATS[fmt_name].from_arrays(fmt.shape, fmt.arrays())
    assert np.array_equal(again.to_dense(), w)
    if fmt_name != "dense":
        assert fmt.nnz == int(np.count_nonzero(w))
        assert np.array_equal(fmt.kept_mask(), w != 0)


@pytest.mark.parametrize("fmt_name", list(FORMATS))
def test_coo_matches_dense(fmt_name, rng):
    w = make_kep_weight(rng, 9, 5, 3, 3)
    o, c, kh, kw, v = FORMATS[fmt_name].from_dense(w).coo()
    rebuilt = np.zeros_like(w)
    rebuilt[o, c, kh, kw] = v
    assert np.array_equal(rebuilt, w)


def test_explicit_mask_keeps_zero_weights(rng):
    w = make_kep_weight(rng, 4, 3, 3, 3)
    mask = w != 0
    mask[0, 0, 1, 1] = True  # a kept position whose weight is exactly 0
    w[0, 0, 1, 1] = 0
    for name in ("csr", "pattern"):
        fmt = FORMATS[name].from_dense(w, mask=mask)
        assert fmt.nnz == int(mask.sum())
        assert np.array_equal(fmt.kept_mask(), mask)
        assert np.array_equal(fmt.to_dense(), w)


def test_mask_must_cover_nonzeros(rng):
    w = make_kep_weight(rng, 4, 3, 3, 3)
    with pytest.raises(ks.FormatError, match="outside the mask"):
        pack(w, "csr", mask=np.zeros(w.shape, bool))


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16])
def test_id_packing_round_trip(bits, rng):
    ids = rng.integers(0, 1 << bits, size=37)
    packed = pack_ids(ids, bits)
    assert packed.nbytes == -(-37 * bits // 8)
    assert np.array_equal(unpack_ids(packed, 37, bits), ids)


def test_pattern_library_layout(rng):
    w = make_kep_weight(rng, 32, 16, 3, 3, keep_per_plane=4, n_patterns=8, empty_planes=0.25)
    fmt = ks.PatternFormat.from_dense(w)
    lib = fmt.patterns.reshape(fmt.n_patterns, -1)
    assert not lib[0].any() and lib[1:].any(axis=1).all()
    assert fmt.n_patterns <= 9 and fmt.bits_per_id == 4
    usage = fmt.pattern_usage()
    assert usage.sum() == 32 * 16 and np.all(np.diff(usage[1:]) <= 0)  # most used first
    # the "few indexes" target: index bytes <= 15 % of value bytes for KEP layers
    assert fmt.index_bytes <= 0.15 * fmt.value_bytes


def test_pattern_limit(rng):
    w = ks.testing.random_sparse_weight(rng, (16, 16, 3, 3), 0.5)
    with pytest.raises(ks.FormatError, match="distinct kernel-plane patterns"):
        ks.PatternFormat.from_dense(w, max_patterns=8)


def test_id_bits():
    assert [id_bits(n) for n in (1, 2, 3, 5, 16, 17, 256, 257)] == [1, 1, 2, 4, 4, 8, 8, 16]


def test_auto_choice(rng):
    kep = make_kep_weight(rng, 64, 64, 3, 3)
    assert pack(kep).name == "pattern"
    # 3x3 planes have at most 512 masks: a pattern id beats CSR indices even when random
    assert pack(ks.testing.random_sparse_weight(rng, (64, 64, 3, 3), 0.9)).name == "pattern"
    # 7x7 random planes are all distinct: the library costs more than CSR's indices
    assert pack(ks.testing.random_sparse_weight(rng, (16, 16, 7, 7), 0.8)).name == "csr"
    dense_ish = ks.testing.random_sparse_weight(rng, (8, 8, 3, 3), 0.2)
    assert pack(dense_ish).name == "dense"
    assert pack(dense_ish, min_sparsity=0.1).name in ("csr", "pattern")
    chosen = pack(kep)
    for name in ("csr", "pattern"):
        assert chosen.nbytes <= pack(kep, name).nbytes


def test_dense_reports_true_nnz(rng):
    w = ks.testing.random_sparse_weight(rng, (4, 4, 3, 3), 0.3)
    fmt = pack(w, "dense")
    assert fmt.nnz == np.count_nonzero(w) and fmt.index_bytes == 0


# --- validation of untrusted arrays: each names the field -----------------------------------

def _csr(rng):
    return ks.CSRFormat.from_dense(ks.testing.random_sparse_weight(rng, (4, 3, 3, 3), 0.6))


@pytest.mark.parametrize("mutate,field", [
    (lambda a: a.__setitem__("indices", np.full_like(a["indices"], 27)), "indices"),
    (lambda a: a.__setitem__("indptr", a["indptr"][::-1].copy()), "indptr"),
    (lambda a: a.__setitem__("values", a["values"][:-1].copy()), "values"),
    (lambda a: a.__setitem__("indptr", a["indptr"][:-1].copy()), "indptr"),
    (lambda a: a.__setitem__("indices", a["indices"].astype(np.int64)), "indices"),
    (lambda a: a.__setitem__("values", np.full_like(a["values"], np.nan)), "values"),
    (lambda a: a.pop("values"), "values"),
])
def test_csr_validation(mutate, field, rng):
    fmt = _csr(rng)
    arrays = {k: v.copy() for k, v in fmt.arrays().items()}
    mutate(arrays)
    with pytest.raises(ks.FormatError) as err:
        ks.CSRFormat.from_arrays(fmt.shape, arrays)
    assert err.value.field == field


def test_csr_unsorted_indices_refused(rng):
    fmt = _csr(rng)
    arrays = {k: v.copy() for k, v in fmt.arrays().items()}
    row = slice(arrays["indptr"][0], arrays["indptr"][1])
    arrays["indices"][row] = arrays["indices"][row][::-1]
    if arrays["indptr"][1] - arrays["indptr"][0] > 1:
        with pytest.raises(ks.FormatError, match="strictly increasing"):
            ks.CSRFormat.from_arrays(fmt.shape, arrays)


def _pattern(rng):
    return ks.PatternFormat.from_dense(make_kep_weight(rng, 6, 5, 3, 3))


@pytest.mark.parametrize("mutate,field", [
    (lambda a: a.__setitem__("plane_ids", np.full_like(a["plane_ids"], 0xFF)), "plane_ids"),
    (lambda a: a.__setitem__("plane_ids", a["plane_ids"][:-1].copy()), "plane_ids"),
    (lambda a: a.__setitem__("values", np.concatenate([a["values"], [1.0]]).astype(np.float32)), "values"),
    (lambda a: a["patterns"].__setitem__((0, 0, 0), 1), "patterns"),
    (lambda a: a["patterns"].__setitem__((1, 0, 0), 7), "patterns"),
    (lambda a: a.__setitem__("patterns", a["patterns"][:, :2].copy()), "patterns"),
])
def test_pattern_validation(mutate, field, rng):
    fmt = _pattern(rng)
    arrays = {k: v.copy() for k, v in fmt.arrays().items()}
    mutate(arrays)
    with pytest.raises(ks.FormatError) as err:
        ks.PatternFormat.from_arrays(fmt.shape, arrays)
    assert err.value.field == field


def test_pattern_duplicate_library_rows_refused(rng):
    fmt = _pattern(rng)
    arrays = {k: v.copy() for k, v in fmt.arrays().items()}
    arrays["patterns"][2] = arrays["patterns"][1]
    with pytest.raises(ks.FormatError, match="duplicate"):
        ks.PatternFormat.from_arrays(fmt.shape, arrays)


@pytest.mark.parametrize("bad", [np.zeros((3, 3)), np.zeros((2, 2, 3, 3), np.int32),
                                 np.full((2, 2, 3, 3), np.inf, np.float32), np.zeros((0, 2, 3, 3))])
def test_from_dense_refuses_bad_weights(bad):
    with pytest.raises(ks.FormatError):
        pack(bad, "csr")
