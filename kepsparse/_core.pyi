"""Type stub of the private C++ extension (csrc/module.cpp, csrc/runner.cpp). Layouts:
csrc/spconv.hpp."""
from typing import Sequence

import numpy as np
import numpy.typing as npt

def cpu_features() -> dict[str, bool]: ...
def all_finite(x: npt.NDArray[np.float32]) -> bool: ...
def openmp_max_threads() -> int: ...
def spconv_tile_vectors(isa: str, ob: int) -> int: ...

class SpconvPlan:
    """Register-block plan: output-channel blocks of OB with the union of their positions."""
    def __init__(self, O: int, Ctot: int, KH: int, KW: int, OB: int,
                 out_ch: npt.NDArray[np.int32], ck: npt.NDArray[np.int32],
                 w: npt.NDArray[np.float32], cptr: npt.NDArray[np.int64]) -> None: ...
    @property
    def OB(self) -> int: ...
    @property
    def entries(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

class GroupPlan:
    """Pattern-group plan: per input channel, the planes sharing one library pattern."""
    def __init__(self, O: int, Ctot: int, KH: int, KW: int, och: int,
                 grp_ci: npt.NDArray[np.int32], grp_k: npt.NDArray[np.int32],
                 grp_np: npt.NDArray[np.int32], grp_ptr: npt.NDArray[np.int64],
                 ch_o: npt.NDArray[np.int32], ch_w: npt.NDArray[np.float32],
                 chunk_ptr: npt.NDArray[np.int64]) -> None: ...
    @property
    def groups(self) -> int: ...
    @property
    def entries(self) -> int: ...

class SpconvCall:
    """A layer's conv bound to one input shape, bias and geometry (kernels/cpp.bind)."""
    def __init__(self, plan: SpconvPlan | GroupPlan, isa: str, x_shape: Sequence[int],
                 bias: npt.NDArray[np.float32] | None, stride: Sequence[int],
                 padding: Sequence[int], dilation: Sequence[int], out_hw: Sequence[int],
                 threads: int) -> None: ...
    def __call__(self, x: npt.NDArray[np.float32], relu: bool,
                 residual: npt.NDArray[np.float32] | None = None
                 ) -> npt.NDArray[np.float32] | None:
        """act(conv2d(x) + bias + residual), or None (nothing computed) when x holds a
        NaN/Inf; releases the GIL. x and residual are read in place when float32 with
        contiguous rows; the result is a strided view once pack_output_for succeeded."""
    def pack_output_for(self, consumer: SpconvCall) -> bool:
        """Write later outputs in consumer's packed input layout (consumer then skips
        packing); False, changing nothing, when consumer is not stride 1 or takes another
        shape."""
    @property
    def packs_output(self) -> bool: ...
    def reads_packed(self, x: npt.NDArray[np.float32]) -> bool:
        """Whether x is another call's output in this call's packed input layout."""
    @property
    def thread_counts(self) -> tuple[int, int]:
        """(default, alternative) thread counts; when they differ each call runs the one
        measured faster."""

class StepRunner:
    """A compiled graph's steps run in C++ (runtime/engine.py, GraphModel._build_native).
    steps: (fn, input slots, output slot, dead slots, conv or None) per step, conv being
    (SpconvCall, x shape, output shape, relu)."""
    def __init__(self, steps: list) -> None: ...
    def run(self, slots: list, step_seconds: list | None = None) -> None:
        """Runs the steps on slots; with step_seconds, appends each step's seconds."""
    @property
    def steps(self) -> int: ...
    @property
    def native_steps(self) -> int: ...

def spconv_run(plan: SpconvPlan | GroupPlan, isa: str, x: npt.NDArray[np.float32],
               bias: npt.NDArray[np.float32] | None, stride: Sequence[int],
               padding: Sequence[int], dilation: Sequence[int], out_hw: Sequence[int],
               relu: bool = False, threads: int = 0,
               residual: npt.NDArray[np.float32] | None = None) -> npt.NDArray[np.float32]:
    """act(conv2d(x) + bias + residual); residual has the output's shape (N, O, Ho, Wo)."""


def max_pool2d(x: npt.NDArray[np.float32], kernel: Sequence[int], stride: Sequence[int],
               pad_begin: Sequence[int], dilation: Sequence[int],
               out_hw: Sequence[int]) -> npt.NDArray[np.float32]:
    """2-D max pooling; positions outside x are ignored, NaN propagates; releases the GIL."""
