"""The runtime's BLAS calls run on one thread (kepsparse/blas.py): a threaded OpenBLAS call
leaves a worker spinning for ~0.1 s on the cores the sparse kernels use next."""
from __future__ import annotations

import os
import resource
import time

import numpy as np
import pytest

from kepsparse.geometry import ConvGeometry
from kepsparse import blas
from kepsparse.runtime.dense import DenseConv

threadpoolctl = pytest.importorskip("threadpoolctl")
pytestmark = pytest.mark.skipif(not blas._blas_libs(), reason="no BLAS threadpoolctl controls")


def test_one_blas_thread_limits_and_restores():
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = [lib.get_num_threads() for lib in blas._blas_libs()]
        with blas.one_blas_thread():
            assert all(lib.get_num_threads() == 1 for lib in blas._blas_libs())
        assert [lib.get_num_threads() for lib in blas._blas_libs()] == before


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_burnt_after(fn) -> float:
    """CPU seconds this process uses in the 0.3 s after fn() returns (while it sleeps)."""
    fn()
    time.sleep(0.3)  # let any earlier spin end
    fn()
    c0 = _cpu_s()
    time.sleep(0.3)
    return _cpu_s() - c0


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="BLAS runs one thread anyway")
def test_runtime_blas_calls_leave_no_spinning_worker():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((64, 512)).astype(np.float32)
    B = rng.standard_normal((512, 1000)).astype(np.float32)
    conv = DenseConv(rng.standard_normal((32, 16, 3, 3)).astype(np.float32), None,
                     ConvGeometry.make(1, 1))
    x = rng.standard_normal((2, 16, 40, 40)).astype(np.float32)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        product = blas.single_threaded(lambda: A @ B)
        for fn in (product, lambda: conv(x)):
            # a spinning OpenBLAS worker burns ~0.1 s of CPU here; a sleeping one nothing
            assert _cpu_burnt_after(fn) < 0.03


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="BLAS runs one thread anyway")
@pytest.mark.parametrize("threads", [None, 2])
def test_graph_gemm_leaves_no_spinning_worker(threads):
    """Through the graph runtime: a classifier Gemm above ops.SMALL_PRODUCT (a batch of 64
    x 512 -> 1000) goes through BLAS, on one thread, whatever ``threads`` says."""
    pytest.importorskip("onnx")
    import kepsparse as ks
    from kepsparse.runtime import ops
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((1000, 512)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 512])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    m = ks.convert(proto)
    x = rng.standard_normal((64, 512)).astype(np.float32)
    assert not ops.is_small_product(x, np.zeros((512, 1000), np.float32))
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        y = m(x, threads=threads)
        np.testing.assert_allclose(y, x @ numpy_helper.to_array(w).T, rtol=1e-4, atol=1e-3)
        assert _cpu_burnt_after(lambda: m(x, threads=threads)) < 0.03
