"""Wall-clock timing on a shared, noisy machine.

Each contender gets a warm-up, then its timed calls are spread over ``rounds`` rounds that
visit every contender of a case in turn (interleaved blocks), so a burst of load from other
processes hits all contenders alike instead of whichever happened to be running. Within a
block: one untimed call (re-warms caches and thread pools after the previous contender),
then timed calls until the block's share of the budget has passed. Reported: median, p90,
min and the number of timed calls.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import numpy as np

STATS = ("median", "min")


@dataclass(frozen=True)
class Timing:
    median_s: float
    p90_s: float
    min_s: float
    repeats: int

    @classmethod
    def of(cls, times) -> "Timing":
        arr = np.asarray(times, dtype=np.float64)
        return cls(float(np.median(arr)), float(np.percentile(arr, 90)), float(arr.min()), len(arr))

    def stat(self, name: str) -> float:
        return {"median": self.median_s, "min": self.min_s}[name]

    def to_json(self) -> dict:
        return {"time_s": self.median_s, "p90_s": self.p90_s, "min_s": self.min_s,
                "repeats": self.repeats}


def warm_up(fn, seconds: float, max_calls: int = 10_000) -> None:
    """At least 2 calls, more until ``seconds`` have passed."""
    start, n = time.perf_counter(), 0
    while n < 2 or (time.perf_counter() - start < seconds and n < max_calls):
        fn()
        n += 1


def sample(fn, seconds: float, min_calls: int = 1, max_calls: int = 10_000) -> list[float]:
    """One untimed call, then per-call times until ``seconds`` passed (>= ``min_calls``).
    The garbage collector is off meanwhile."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        fn()
        times: list[float] = []
        t0 = time.perf_counter()
        while len(times) < min_calls or (time.perf_counter() - t0 < seconds and len(times) < max_calls):
            a = time.perf_counter()
            fn()
            times.append(time.perf_counter() - a)
        return times
    finally:
        if gc_was_enabled:
            gc.enable()


def measure(fn, budget_s: float = 0.4, warmup_s: float = 0.1, min_repeats: int = 3,
            max_repeats: int = 10_000) -> Timing:
    """Time one callable alone: warm-up, then ``budget_s`` of timed calls."""
    warm_up(fn, warmup_s)
    return Timing.of(sample(fn, budget_s, min_repeats, max_repeats))
