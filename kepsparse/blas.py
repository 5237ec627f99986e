"""kepsparse's own BLAS calls (the runtime's dense conv path and large Gemm/MatMul, the C++
plans' channel regrouping) run on one thread.

Why, measured on this project's machine (2 vCPUs, the OpenBLAS bundled with NumPy): after
any multi-threaded BLAS call, OpenBLAS's idle worker spins (sched_yield) for about 0.1 s.
A 0.27 ms 8x512 @ 512x1000 product (ResNet-18's classifier at batch 8) burnt 104 ms of CPU
in the half second after it; on one thread it takes the same 0.27 ms and burns nothing.
The spin lands on the core the sparse kernels and their helper thread use next: ResNet-18
at batch 8 with 2 threads spent 30 % of its CPU samples in ``blas_thread_server`` and ran
no faster than on one thread (75 ms; 46 ms with this). These products are small next to
that cost, so they run single-threaded; kepsparse's own kernels do the threading.

The limit is set and restored around each call through threadpoolctl's per-library
controllers (~1.3 us; its ``limit()`` context costs ~6.5 us). Without threadpoolctl, or
with a BLAS it does not know, calls run as they are.
"""
from __future__ import annotations

import contextlib
import threading

_LOCK = threading.Lock()
_LIBS: list | None = None  # threadpoolctl LibControllers of the loaded BLAS libraries


def _blas_libs() -> list:
    global _LIBS
    if _LIBS is None:
        with _LOCK:
            if _LIBS is None:
                try:
                    import numpy  # noqa: F401 - the BLAS must be loaded to be found
                    from threadpoolctl import ThreadpoolController
                    _LIBS = list(ThreadpoolController().select(user_api="blas").lib_controllers)
                except Exception:  # noqa: BLE001 - no threadpoolctl / unknown BLAS: no limit
                    _LIBS = []
    return _LIBS


@contextlib.contextmanager
def one_blas_thread():
    """BLAS limited to one thread inside the block; the previous counts restored after.
    The count is process-wide: when Python threads overlap here, one may restore the count
    while another is still inside, whose BLAS call then runs threaded (slower to follow,
    never wrong)."""
    libs = _blas_libs()
    previous = []
    for lib in libs:
        n = lib.get_num_threads()
        previous.append(n)
        if n != 1:
            lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(libs, previous):
            if n != 1:
                lib.set_num_threads(n)


def single_threaded(fn):
    """``fn`` wrapped to run under ``one_blas_thread``."""
    def wrapped(*args, **kwargs):
        with one_blas_thread():
            return fn(*args, **kwargs)
    wrapped.__wrapped__ = fn
    return wrapped
