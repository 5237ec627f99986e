"""C++-backend specifics the registry-wide test does not cover: every register tile (OB) on
every ISA this CPU runs, thread counts, the GIL, ISA availability, the plan's own checks, and
layers of real size against the reference."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

import kepsparse as ks
from kepsparse.errors import UnsupportedError
from kepsparse.geometry import ConvGeometry
from kepsparse.kernels import all_kernels, cpp, get
from kepsparse.testing import edge_case_weights, make_kep_weight, random_sparse_weight

pytestmark = pytest.mark.skipif(cpp._core is None, reason="kepsparse._core not built")

CPP_KERNELS = [k for k in all_kernels(include_unavailable=True) if k.backend == "cpp"]
USABLE_ISAS = [isa for isa, needs, _ in cpp.ISAS if cpp._isa_reason(isa, needs) is None]


def _run_plan(plan, isa, x, bias=None, stride=1, padding=0, dilation=1, relu=False, threads=None):
    geo = ConvGeometry.make(stride, padding, dilation)
    KH, KW = plan_shape[plan][2:]
    Ho, Wo = geo.output_size(x.shape[2], x.shape[3], KH, KW)
    return cpp._core.spconv_run(plan, isa, x, bias, geo.stride, geo.padding, geo.dilation,
                                (Ho, Wo), relu, 0 if threads is None else threads)


plan_shape: dict = {}


def _plan(fmt, groups, isa, ob):
    p = cpp.build_plan(fmt, groups, isa, ob=ob)
    plan_shape[p] = fmt.shape
    return p


def test_every_format_and_isa_registered():
    names = {k.name for k in CPP_KERNELS}
    for fmt in ("pattern", "csr", "dense"):
        for isa, _, _ in cpp.ISAS:
            assert any(n.startswith(f"{fmt}_f32_") and n.endswith(f"_{isa}") for n in names)


def test_generic_always_available_and_best_isa_is_picked():
    assert "generic" in USABLE_ISAS
    k = ks.kernels.select("pattern", "cpp")
    assert k.isa == USABLE_ISAS[0]


def test_missing_isa_reports_reason(monkeypatch):
    monkeypatch.setattr(cpp, "_features", lambda: {"avx2": False, "fma": False, "avx512f": False})
    for k in CPP_KERNELS:
        reason = k.unavailable_reason()
        if k.isa == "generic":
            assert reason is None
        else:
            assert reason and "lacks" in reason and k.isa in reason


def test_runs_without_extension():
    """Without kepsparse._core the module imports and the kernels say why they cannot run."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'kepsparse._core': raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from kepsparse.kernels import all_kernels, backend_status\n"
        "ks = [k for k in all_kernels(include_unavailable=True) if k.backend == 'cpp']\n"
        "assert len(ks) == 12, [k.name for k in ks]\n"
        "assert all('kepsparse._core not built' in k.unavailable_reason() for k in ks)\n"
        "print(backend_status()['cpp'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "not built" in out.stdout


@pytest.mark.parametrize("isa", USABLE_ISAS)
@pytest.mark.parametrize("ob", cpp.OB_CHOICES)
def test_every_register_tile_matches_reference(isa, ob):
    if cpp._core.spconv_tile_vectors(isa, ob) == 0:
        pytest.skip(f"{isa} has no tile for OB={ob}")
    rng = np.random.default_rng(ob)
    geos = [dict(stride=1, padding=1), dict(stride=2, padding=(0, 1, 2, 1), dilation=2),
            dict(stride=(1, 3), padding=2)]
    for label, w in edge_case_weights():
        for groups in (1, 2) if w.shape[0] % 2 == 0 else (1,):
            fmt = ks.pack(w, "csr")
            plan = _plan(fmt, groups, isa, ob)
            assert plan.OB == ob
            C = w.shape[1] * groups
            for g in geos:
                x = rng.standard_normal((2, C, 13, 17)).astype(np.float32)
                bias = rng.standard_normal(w.shape[0]).astype(np.float32)
                ref = ks.conv2d(x, fmt, bias, groups=groups, backend="reference", **g)
                y = _run_plan(plan, isa, x, bias, **g)
                np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5,
                                           err_msg=f"{label} groups={groups} {g}")


@pytest.mark.parametrize("isa", USABLE_ISAS)
@pytest.mark.parametrize("och", [1, 3, 128])
def test_pattern_group_plan_matches_reference(isa, och):
    """The pattern-group kernel over the edge cases, with output-channel chunks that do and
    do not divide O, groups, and patterns of more than 4 positions (several groups each)."""
    rng = np.random.default_rng(och)
    geos = [dict(stride=1, padding=1), dict(stride=2, padding=(0, 1, 2, 1), dilation=2),
            dict(stride=(1, 3), padding=2)]
    for label, w in list(edge_case_weights()) + [("kep7", make_kep_weight(rng, 10, 6, 3, 3, 7))]:
        for groups in (1, 2) if w.shape[0] % 2 == 0 else (1,):
            fmt = ks.pack(w, "pattern")
            plan = cpp.build_group_plan(fmt, groups, och=och)
            plan_shape[plan] = fmt.shape
            C = w.shape[1] * groups
            for g in geos:
                x = rng.standard_normal((2, C, 13, 17)).astype(np.float32)
                bias = rng.standard_normal(w.shape[0]).astype(np.float32)
                ref = ks.conv2d(x, fmt, bias, groups=groups, backend="reference", **g)
                y = _run_plan(plan, isa, x, bias, relu=False, **g)
                np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5,
                                           err_msg=f"{label} groups={groups} {g}")


@pytest.mark.parametrize("kernel", [k.name for k in CPP_KERNELS if k.unavailable_reason() is None
                                    and k.formats != ("dense",)])
def test_real_size_layers_match_reference(kernel, rng):
    fmt_name = get(kernel).formats[0]
    for (O, C, H, W), stride, w in [
        ((64, 64, 28, 28), 1, make_kep_weight(rng, 64, 64, 3, 3, empty_planes=0.7)),
        ((128, 64, 29, 27), 2, make_kep_weight(rng, 128, 64, 3, 3, empty_planes=0.5)),
        ((96, 40, 15, 15), 1, random_sparse_weight(rng, (96, 40, 3, 3), 0.9)),
    ]:
        fmt = ks.pack(w, fmt_name)
        x = rng.standard_normal((2, C, H, W)).astype(np.float32)
        ref = ks.conv2d(x, fmt, None, stride=stride, padding=1, backend="reference")
        y = ks.conv2d(x, fmt, None, stride=stride, padding=1, backend=kernel)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_thread_counts_give_identical_results(rng):
    w = make_kep_weight(rng, 64, 32, 3, 3, empty_planes=0.6)
    fmt = ks.pack(w, "pattern")
    x = rng.standard_normal((3, 32, 21, 19)).astype(np.float32)
    ys = [ks.conv2d(x, fmt, None, padding=1, backend="cpp", threads=t) for t in (1, 2, 3, None)]
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])


def test_gil_is_released_during_the_call(rng):
    w = random_sparse_weight(rng, (128, 128, 3, 3), 0.5)
    fmt = ks.pack(w, "csr")
    x = rng.standard_normal((12, 128, 56, 56)).astype(np.float32)  # a call of ~0.3 s
    ks.conv2d(x[:1], fmt, None, padding=1, backend="cpp", threads=1)  # build the plan
    t0 = time.perf_counter()
    ks.conv2d(x, fmt, None, padding=1, backend="cpp", threads=1)
    call = time.perf_counter() - t0
    done = threading.Event()

    def work():
        ks.conv2d(x, fmt, None, padding=1, backend="cpp", threads=1)
        done.set()

    th = threading.Thread(target=work)
    ticks, gaps, last = 0, [], time.perf_counter()
    th.start()
    while not done.is_set():
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        ticks += 1
    th.join()
    # holding the GIL for the whole call would freeze this loop for about `call` seconds
    assert ticks > 100
    assert max(gaps) < 0.5 * call + 0.02, (max(gaps), call)


def test_group_plan_rejects_broken_arrays(rng):
    fmt = ks.pack(make_kep_weight(rng, 4, 3, 3, 3), "pattern")
    good = cpp.build_group_plan(fmt, 1, och=2)
    assert good.entries > 0
    core = cpp._core
    ok = dict(O=2, Ctot=3, KH=3, KW=3, och=2, grp_ci=np.array([1], np.int32),
              grp_k=np.array([0, 4, 8, 0], np.int32), grp_np=np.array([3], np.int32),
              grp_ptr=np.array([0, 2], np.int64), ch_o=np.array([0, 1], np.int32),
              ch_w=np.ones(8, np.float32), chunk_ptr=np.array([0, 1], np.int64))
    core.GroupPlan(**ok)
    for field, bad in [("grp_ci", np.array([3], np.int32)), ("grp_k", np.array([0, 4, 9, 0], np.int32)),
                       ("grp_np", np.array([5], np.int32)), ("ch_o", np.array([0, 2], np.int32)),
                       ("chunk_ptr", np.array([0, 2], np.int64)), ("ch_w", np.ones(7, np.float32))]:
        with pytest.raises(ValueError):
            core.GroupPlan(**{**ok, field: bad})


def test_plan_rejects_broken_arrays():
    core = cpp._core
    ok = dict(O=2, Ctot=8, KH=1, KW=1, OB=1, out_ch=np.array([0, 1], np.int32),
              ck=np.array([0, 3], np.int32), w=np.ones(2, np.float32),
              cptr=np.array([0, 1, 1, 2], np.int64))
    core.SpconvPlan(**ok)
    for field, bad in [("ck", np.array([0, 8], np.int32)), ("out_ch", np.array([0, 0], np.int32)),
                       ("cptr", np.array([0, 2, 1, 2], np.int64)), ("OB", 3),
                       ("w", np.ones(3, np.float32))]:
        with pytest.raises(ValueError):
            core.SpconvPlan(**{**ok, field: bad})


@pytest.mark.parametrize("OB, out_ch", [(1, [0, -1]), (2, [1, -1]), (2, [-1, -1])])
def test_plan_rejects_a_missing_output_channel(OB, out_ch):
    """The kernel writes y only through out_ch: a channel missing from it would leave its
    plane of y uninitialised, so the plan itself is refused, naming the channel."""
    core = cpp._core
    nb = 2 if OB == 1 else 1
    out = np.array(out_ch, np.int32)
    ne = 2
    cptr = np.array([0, 1, 1, 2] if nb == 2 else [0, 2], np.int64)
    with pytest.raises(ValueError, match=r"output channel \d missing from out_ch"):
        core.SpconvPlan(O=2, Ctot=8, KH=1, KW=1, OB=OB, out_ch=out,
                        ck=np.array([0, 3], np.int32), w=np.ones(ne * OB, np.float32), cptr=cptr)


def test_plans_cover_every_channel_including_empty_filters(rng):
    """build_plan lists every output channel (empty filters too) at every OB: their output is
    exactly the bias, never leftover memory."""
    w = random_sparse_weight(rng, (9, 4, 3, 3), 0.5)
    w[[0, 4, 8]] = 0
    fmt = ks.pack(w, "csr")
    x = rng.standard_normal((1, 4, 10, 11)).astype(np.float32)
    bias = np.arange(1, 10, dtype=np.float32)
    for isa in USABLE_ISAS:
        for ob in cpp.OB_CHOICES:
            if cpp._core.spconv_tile_vectors(isa, ob) == 0:
                continue
            y = _run_plan(_plan(fmt, 1, isa, ob), isa, x, bias, padding=1)
            for o in (0, 4, 8):
                np.testing.assert_array_equal(y[0, o], np.full((10, 11), bias[o], np.float32))
            ref = ks.conv2d(x, fmt, bias, padding=1, backend="reference")
            np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["blocks", "groups"])
def test_input_smaller_than_kernel_is_rejected(rng, kind):
    """-stride < Hp - span < 0: truncating division would give Ho == 1 and let a wrong
    out_hw through; the padded input is checked against the dilated kernel first."""
    fmt = ks.pack(make_kep_weight(rng, 4, 3, 3, 3), "pattern")
    plan = (cpp.build_plan(fmt, 1, USABLE_ISAS[0]) if kind == "blocks"
            else cpp.build_group_plan(fmt, 1))
    x = np.ones((1, 3, 2, 5), np.float32)
    for stride, dil, hw in [((2, 1), (1, 1), (1, 3)), ((3, 1), (1, 1), (1, 3)),
                            ((4, 1), (2, 1), (1, 3))]:
        with pytest.raises(ValueError, match="smaller than the dilated kernel"):
            cpp._core.spconv_run(plan, USABLE_ISAS[0], x, None, stride, (0, 0, 0, 0), dil, hw,
                                 False, 0)
    # the same in width
    xt = np.ones((1, 3, 5, 2), np.float32)
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        cpp._core.spconv_run(plan, USABLE_ISAS[0], xt, None, (1, 2), (0, 0, 0, 0), (1, 1),
                             (3, 1), False, 0)
    # a wrong out_hw on a valid input names both sizes
    with pytest.raises(ValueError, match=r"output size 2x3 does not match.*expected 3x3"):
        cpp._core.spconv_run(plan, USABLE_ISAS[0], np.ones((1, 3, 5, 5), np.float32), None,
                             (1, 1), (0, 0, 0, 0), (1, 1), (2, 3), False, 0)


@pytest.mark.parametrize("isa", USABLE_ISAS)
@pytest.mark.parametrize("kind", ["blocks", "groups"])
def test_bound_call_checks_its_operands_and_keeps_its_plan(rng, kind, isa):
    """_core.SpconvCall (cpp.bind): equals spconv_run; returns None for a NaN/Inf input
    without writing anything; refuses an input or residual of another shape and a bias of
    the wrong length; holds the plan and a copy of the bias after Python drops them."""
    import gc
    fmt = ks.pack(make_kep_weight(rng, 9, 5, 3, 3), "pattern")
    plan = (cpp.build_plan(fmt, 1, isa) if kind == "blocks" else cpp.build_group_plan(fmt, 1))
    bias = rng.standard_normal(9).astype(np.float32)
    x = rng.standard_normal((2, 5, 11, 13)).astype(np.float32)
    r = rng.standard_normal((2, 9, 6, 7)).astype(np.float32)
    args = ((2, 2), (1, 1, 1, 1), (1, 1), (6, 7), 1)
    want = cpp._core.spconv_run(plan, isa, x, bias, *args[:4], True, 1, r)
    call = cpp._core.SpconvCall(plan, isa, x.shape, bias.copy(), *args)
    del plan
    gc.collect()
    np.testing.assert_array_equal(call(x, True, r), want)
    np.testing.assert_array_equal(call(x, True, r), want)  # reusable
    # every input packer (stride 1, column stride 2, the scalar general-stride one) sees
    # every float, the last one included, and the sign of an infinity does not matter
    for stride in (1, 2, 3):
        geo = ConvGeometry.make(stride, 1)
        out_hw = geo.output_size(11, 13, 3, 3)
        c2 = cpp._core.SpconvCall(cpp.build_plan(fmt, 1, isa) if kind == "blocks"
                                  else cpp.build_group_plan(fmt, 1), isa, x.shape, None,
                                  geo.stride, geo.padding, geo.dilation, out_hw, 2)
        assert c2(x, False) is not None
        for bad, at in ((np.inf, (1, 4, 10, 12)), (-np.inf, (0, 0, 0, 0)), (np.nan, (1, 2, 5, 6))):
            xb = x.copy()
            xb[at] = bad
            assert c2(xb, False) is None, (stride, bad, at)
    with pytest.raises(ValueError, match="shape is not the one"):
        call(x[:1].copy(), False)
    with pytest.raises(ValueError, match="shape is not the one"):
        call(np.zeros((2, 5, 11, 12), np.float32), False)
    with pytest.raises(ValueError, match="residual must have the output's shape"):
        call(x, False, r[:, :8].copy())
    plan = cpp.build_plan(fmt, 1, isa) if kind == "blocks" else cpp.build_group_plan(fmt, 1)
    with pytest.raises(ValueError, match="bias length"):
        cpp._core.SpconvCall(plan, isa, x.shape, bias[:8].copy(), *args)
    with pytest.raises(ValueError, match="channel count"):
        cpp._core.SpconvCall(plan, isa, (2, 4, 11, 13), None, *args)
    with pytest.raises(ValueError, match="does not match the geometry"):
        cpp._core.SpconvCall(plan, isa, x.shape, None, (2, 2), (1, 1, 1, 1), (1, 1), (6, 6), 1)
    with pytest.raises(ValueError, match="must not be None"):
        cpp._core.SpconvCall(None, isa, x.shape, None, *args)


@pytest.mark.parametrize("kind", ["blocks", "groups"])
def test_bound_call_gives_the_same_bits_on_either_thread_count(rng, kind):
    """A mid-size layer (between the two work thresholds of SpconvLayout::split) switches
    between 1 and 2 threads by measured time (ThreadChoice): its first calls try both, later
    ones the faster and every 64th the other. The work split changes, the numbers must not."""
    isa = USABLE_ISAS[0]
    w = make_kep_weight(rng, 16, 16, 3, 3)
    w[:, 1::2] = 0
    fmt = ks.pack(w, "pattern")
    plan = cpp.build_plan(fmt, 1, isa) if kind == "blocks" else cpp.build_group_plan(fmt, 1)
    x = rng.standard_normal((1, 16, 32, 32)).astype(np.float32)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), (32, 32))
    want = cpp._core.spconv_run(plan, isa, x, None, *args, True, 1)
    call = cpp._core.SpconvCall(plan, isa, x.shape, None, *args, 2)
    assert call.thread_counts == (1, 2)
    for _ in range(140):
        np.testing.assert_array_equal(call(x, True), want)


@pytest.mark.parametrize("isa", USABLE_ISAS)
@pytest.mark.parametrize("kind", ["blocks", "groups"])
def test_packed_output_feeds_the_next_call_without_packing(rng, kind, isa):
    """SpconvCall.pack_output_for: the producer writes its output in the consumer's packed
    input layout (a strided view); the consumer reads it without packing, and other readers
    (a stride-2 conv, a residual, NumPy) see the same numbers as a contiguous output. The
    padding around the data stays zero through buffer reuse; an output holding an Inf makes
    the consumer return None (dense semantics), as an Inf input does."""
    def plan(fmt):
        return cpp.build_plan(fmt, 1, isa) if kind == "blocks" else cpp.build_group_plan(fmt, 1)

    def bound(fmt, x_shape, stride, pad, out_hw, bias=None, threads=2):
        geo = ConvGeometry.make(stride, pad)
        return cpp._core.SpconvCall(plan(fmt), isa, x_shape, bias, geo.stride, geo.padding,
                                    geo.dilation, out_hw, threads)

    f1 = ks.pack(make_kep_weight(rng, 6, 5, 3, 3), "pattern")
    f2 = ks.pack(make_kep_weight(rng, 7, 6, 3, 3), "pattern")
    f3 = ks.pack(make_kep_weight(rng, 6, 6, 3, 3), "pattern")
    b1 = rng.standard_normal(6).astype(np.float32)
    N, H, W = 2, 9, 11
    producer = bound(f1, (N, 5, H, W), 1, 1, (H, W), b1)
    consumer = bound(f2, (N, 6, H, W), 1, 1, (H, W))   # stride 1: adopts this layout
    strided = bound(f2, (N, 6, H, W), 2, 1, (5, 6))    # stride 2: packs from the view
    residual = bound(f3, (N, 6, H, W), 1, 1, (H, W))   # reads it as x and as residual
    assert not producer.packs_output
    assert not strided.pack_output_for(consumer) and not strided.packs_output  # other shape
    assert not producer.pack_output_for(strided)  # a stride-2 conv takes no packed input
    assert producer.pack_output_for(consumer) and producer.packs_output
    # outputs beyond ~1 MB stay plain arrays (runner.cpp, PACKED_MAX_BYTES)
    f16 = ks.pack(make_kep_weight(rng, 16, 16, 3, 3), "pattern")
    big_p = bound(f16, (1, 16, 128, 128), 1, 1, (128, 128))
    big_c = bound(f16, (1, 16, 128, 128), 1, 1, (128, 128))
    assert not big_p.pack_output_for(big_c) and not big_p.packs_output
    assert bound(f16, (1, 16, 96, 96), 1, 1, (96, 96)).pack_output_for(
        bound(f16, (1, 16, 96, 96), 1, 1, (96, 96)))
    for _ in range(3):  # buffers are reused: their padding must stay zero
        x = rng.standard_normal((N, 5, H, W)).astype(np.float32) * 4
        y = producer(x, True)
        ref = ks.conv2d(x, f1, b1, padding=1, relu=True, backend="reference")
        assert not y.flags.c_contiguous and y.shape == ref.shape
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
        assert consumer.reads_packed(y) and residual.reads_packed(y)
        assert not consumer.reads_packed(np.ascontiguousarray(y))
        assert not strided.reads_packed(y)
        yc = np.ascontiguousarray(y)
        np.testing.assert_array_equal(consumer(y, False), consumer(yc, False))
        np.testing.assert_array_equal(strided(y, True), strided(yc, True))
        np.testing.assert_array_equal(residual(y, True, y), residual(yc, True, yc))
        np.testing.assert_allclose(consumer(y, False),
                                   ks.conv2d(yc, f2, None, padding=1, backend="reference"),
                                   rtol=1e-5, atol=1e-5)
    # a slice of the view has other strides: read as a plain strided array
    assert not consumer.reads_packed(y[:1])
    with pytest.raises(TypeError, match="x cannot be read as a float32 array"):
        consumer("not an array", False)
    with pytest.raises(TypeError, match="residual cannot be read"):
        residual(y, False, "not an array")
    # zero strides (a broadcast array) and a reversed array are copied first
    row = rng.standard_normal((1, 6, 1, W)).astype(np.float32)
    xb = np.broadcast_to(row, (N, 6, H, W))
    np.testing.assert_array_equal(consumer(xb, False), consumer(np.ascontiguousarray(xb), False))
    np.testing.assert_array_equal(consumer(yc[:, :, ::-1], False),
                                  consumer(np.ascontiguousarray(yc[:, :, ::-1]), False))
    # an output that overflowed to Inf: the consumer computes nothing
    big = producer(np.full((N, 5, H, W), 3e38, np.float32), False)
    assert np.isinf(big).any()
    assert consumer(big, False) is None and residual(big, False) is None
    assert strided(big, False) is None  # found by its packer


@pytest.mark.parametrize("kind", ["blocks", "groups"])
def test_too_many_plan_indices_is_unsupported(kind):
    """Ctot*KH*KW must fit the plans' int32 indices: UnsupportedError(field='shape') from
    prepare (and from the plan builders once groups multiply the channels), not a wrapped
    value or a raw ValueError. The format's arrays are never touched."""
    kernel = next(k for k in CPP_KERNELS if (k.formats == ("pattern",)) and
                  ((kind == "groups") == ("grp" in k.name)))
    huge = SimpleNamespace(shape=(1, 2**31 // 9 + 1, 3, 3))
    with pytest.raises(UnsupportedError, match=r"2\*\*31") as err:
        kernel.prepare(huge)
    assert err.value.field == "shape"
    kernel.prepare(SimpleNamespace(shape=(1, 2**31 // 9, 3, 3)))  # just below the limit
    many_groups = SimpleNamespace(shape=(2**8, 2**24, 3, 3))  # Cg fits; Cg*groups does not
    build = ((lambda f: cpp.build_plan(f, 2**8, USABLE_ISAS[0])) if kind == "blocks"
             else (lambda f: cpp.build_group_plan(f, 2**8)))
    kernel.prepare(many_groups)
    with pytest.raises(UnsupportedError, match="too large") as err:
        build(many_groups)
    assert err.value.field == "shape"


def test_channel_overlaps_computed_once_per_layer(rng, monkeypatch):
    calls = []
    real = cpp._overlaps
    monkeypatch.setattr(cpp, "_overlaps", lambda m: calls.append(1) or real(m))
    fmt = ks.pack(make_kep_weight(rng, 32, 8, 3, 3), "csr")
    cpp.build_plan(fmt, 1, USABLE_ISAS[0])
    assert len(calls) == 1


def test_boundary_conversions(rng):
    """Non-contiguous / float64 input and wrong shapes straight into the extension."""
    w = make_kep_weight(rng, 8, 4, 3, 3)
    fmt = ks.pack(w, "pattern")
    plan = _plan(fmt, 1, USABLE_ISAS[0], None)
    x = rng.standard_normal((1, 4, 20, 22))[:, :, ::2, ::2]  # float64, strided
    y = _run_plan(plan, USABLE_ISAS[0], x, padding=1)
    ref = ks.conv2d(x, fmt, None, padding=1, backend="reference")
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        _run_plan(plan, USABLE_ISAS[0], np.zeros((1, 5, 8, 8), np.float32), padding=1)
    with pytest.raises(ValueError):
        cpp._core.spconv_run(plan, USABLE_ISAS[0], np.zeros((1, 4, 8, 8), np.float32), None,
                             (1, 1), (1, 1, 1, 1), (1, 1), (9, 8), False, 0)
    with pytest.raises(ValueError):
        cpp._core.spconv_run(plan, "sse9", np.zeros((1, 4, 8, 8), np.float32), None,
                             (1, 1), (1, 1, 1, 1), (1, 1), (8, 8), False, 0)


def test_concurrent_callers_share_the_pool_safely(rng):
    """Python threads calling at once (the GIL is released): every result still exact."""
    w = make_kep_weight(rng, 48, 24, 3, 3, empty_planes=0.5)
    fmt = ks.pack(w, "pattern")
    xs = [rng.standard_normal((2, 24, 23, 21)).astype(np.float32) for _ in range(6)]
    refs = [ks.conv2d(x, fmt, None, padding=1, backend="reference") for x in xs]
    errors = []

    def work(i):
        try:
            for _ in range(5):
                y = ks.conv2d(xs[i], fmt, None, padding=1, backend="cpp", threads=2)
                np.testing.assert_allclose(y, refs[i], rtol=1e-4, atol=1e-5)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    ths = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert not errors, errors[0]


@pytest.mark.parametrize("isa", USABLE_ISAS)
@pytest.mark.parametrize("kind", ["blocks", "groups"])
@pytest.mark.parametrize("N,H,W,stride,padding", [
    (1, 30, 29, 1, (1, 1, 1, 1)),
    (3, 11, 13, 1, (2, 0, 1, 3)),   # images split between threads mid-image
    (2, 23, 17, 1, (0, 2, 3, 0)),
    (1, 31, 30, 2, (1, 1, 1, 1)),   # stride 2: planes packed, tiles still owned
    (3, 14, 15, (1, 2), (0, 1, 2, 1)),
    (2, 17, 16, (2, 2), (3, 0, 0, 2)),
])
def test_threads_pack_the_rows_they_compute(rng, isa, kind, N, H, W, stride, padding):
    """With 2 and 3 threads each thread computes its own pixel tiles (pool_run_owned) and,
    at stride 1, packs the input rows they read (bands of rows): every packed float must
    still come out, so the result has the same bits as one thread; and a NaN in any band
    (the last image's last row, packed by the last thread) is found."""
    C, O = 24, 20
    w = make_kep_weight(rng, O, C, 3, 3)
    w[3] = 0  # an empty filter
    fmt = ks.pack(w, "pattern")
    plan = cpp.build_plan(fmt, 1, isa) if kind == "blocks" else cpp.build_group_plan(fmt, 1)
    geo = ConvGeometry.make(stride, padding)
    (sh, sw), (pt, pb, pl, pr) = geo.stride, geo.padding
    out_hw = ((H + pt + pb - 3) // sh + 1, (W + pl + pr - 3) // sw + 1)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    bias = rng.standard_normal(O).astype(np.float32)
    want = cpp._core.spconv_run(plan, isa, x, bias, geo.stride, geo.padding, geo.dilation,
                                out_hw, True, 1)
    ref = ks.conv2d(x, fmt, bias, stride, padding, backend="reference", relu=True)
    np.testing.assert_allclose(want, ref, rtol=1e-4, atol=1e-4)
    for threads in (2, 3):
        call = cpp._core.SpconvCall(plan, isa, x.shape, bias, geo.stride, geo.padding,
                                    geo.dilation, out_hw, threads)
        assert max(call.thread_counts) >= 2  # the split this test is about
        for _ in range(8):  # both thread counts of the choice, and buffers reused
            np.testing.assert_array_equal(call(x, True), want)
        xn = x.copy()
        xn[-1, -1, -1, -1] = np.nan
        assert call(xn, True) is None
        np.testing.assert_array_equal(call(x, True), want)
