"""Wall-clock timing: warm-up, then repeats until a time budget; median and p90."""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    median_s: float
    p90_s: float
    min_s: float
    repeats: int

    def to_json(self) -> dict:
        return {"time_s": self.median_s, "p90_s": self.p90_s, "min_s": self.min_s,
                "repeats": self.repeats}


def measure(fn, budget_s: float = 0.4, warmup_s: float = 0.1, min_repeats: int = 3,
            max_repeats: int = 10_000) -> Timing:
    """Time ``fn()``: at least 2 warm-up calls lasting ``warmup_s``, then at least
    ``min_repeats`` timed calls, more until ``budget_s`` has passed (at most ``max_repeats``).
    The garbage collector is off while timing."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start, n = time.perf_counter(), 0
        while n < 2 or (time.perf_counter() - start < warmup_s and n < max_repeats):
            fn()
            n += 1
        times: list[float] = []
        t0 = time.perf_counter()
        while len(times) < min_repeats or (time.perf_counter() - t0 < budget_s
                                           and len(times) < max_repeats):
            a = time.perf_counter()
            fn()
            times.append(time.perf_counter() - a)
    finally:
        if gc_was_enabled:
            gc.enable()
    arr = np.asarray(times)
    return Timing(float(np.median(arr)), float(np.percentile(arr, 90)), float(arr.min()), len(arr))
