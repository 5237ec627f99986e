"""cocotb testbench of kep_sparse_conv (one generated layer project).

Structure (after cocotb's matrix_multiplier example):
    InputDriver    loads the int8 input through the write port, with random idle gaps,
                   then pulses `start`
    OutputMonitor  samples every output word (filter, tile, P lanes) on each rising edge
    model          the golden model kepsparse.fpga.quant (rebuilt from golden.npz)
    Checker        compares every output lane bit-exactly, checks that each (filter, tile)
                   appears exactly once, counts errors

Runs: the project's stored vector (data/input.dat -> data/golden.dat) first, then
KEP_RANDOM_RUNS random int8 inputs. Writes a JSON summary to KEP_RESULT_FILE (read by
`kepsparse hls sim`) and ends by asserting zero checker errors.
Environment: KEP_PROJECT_DIR (the project), KEP_RESULT_FILE, KEP_RANDOM_RUNS (default 2).
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from kepsparse.fpga.project import load_golden, load_project, load_vectors

PROJECT = Path(os.environ.get("KEP_PROJECT_DIR", Path(__file__).resolve().parent.parent))


class InputDriver:
    def __init__(self, dut, rng: random.Random, gap_probability: float = 0.3):
        self.dut, self.rng, self.gap = dut, rng, gap_probability

    async def load(self, xq: np.ndarray) -> None:
        dut = self.dut
        for addr, value in enumerate(xq.reshape(-1).tolist()):
            while self.rng.random() < self.gap:  # idle cycles between writes
                dut.x_we.value = 0
                await RisingEdge(dut.clk)
            dut.x_we.value = 1
            dut.x_addr.value = addr
            dut.x_data.value = value & 0xFF
            await RisingEdge(dut.clk)
        dut.x_we.value = 0

    async def start(self) -> None:
        self.dut.start.value = 1
        await RisingEdge(self.dut.clk)
        self.dut.start.value = 0


class OutputMonitor:
    """Collects (filter, tile, lanes mask, [lane values]) and the cycle of `done`."""

    def __init__(self, dut, P: int):
        self.dut, self.P = dut, P
        self.words: list[tuple[int, int, int, list[int]]] = []
        self.edges = 0
        self.done_edge: int | None = None

    async def run(self) -> None:
        dut = self.dut
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            self.edges += 1
            if int(dut.out_valid.value):
                data = int(dut.out_data.value.to_unsigned())
                lanes = [((data >> (8 * p)) & 0xFF) for p in range(self.P)]
                lanes = [v - 256 if v >= 128 else v for v in lanes]
                self.words.append((int(dut.out_o.value.to_unsigned()),
                                   int(dut.out_t.value.to_unsigned()),
                                   int(dut.out_lanes.value.to_unsigned()), lanes))
            if int(dut.done.value) and self.done_edge is None:
                self.done_edge = self.edges


class Checker:
    def __init__(self, log, P: int, npix: int, n_filters: int):
        self.log, self.P, self.npix, self.O = log, P, npix, n_filters
        self.errors = 0
        self.compared = 0

    def error(self, message: str) -> None:
        self.errors += 1
        if self.errors <= 10:
            self.log.error(message)

    def check(self, words, expected: np.ndarray, label: str) -> None:
        """``expected``: int8 (O, HO*WO) from the model."""
        nt = -(-self.npix // self.P)
        seen = set()
        for o, t, lanes_mask, lanes in words:
            if not (0 <= o < self.O and 0 <= t < nt) or (o, t) in seen:
                self.error(f"{label}: unexpected or repeated output word o={o} t={t}")
                continue
            seen.add((o, t))
            for p in range(self.P):
                q = t * self.P + p
                inside = q < self.npix
                if bool(lanes_mask >> p & 1) != inside:
                    self.error(f"{label}: lane mask of o={o} t={t} lane {p} is wrong")
                if inside:
                    self.compared += 1
                    if lanes[p] != int(expected[o, q]):
                        self.error(f"{label}: o={o} pixel={q}: rtl {lanes[p]}, "
                                   f"golden {int(expected[o, q])}")
        missing = self.O * nt - len(seen)
        if missing:
            self.error(f"{label}: {missing} output words never arrived")


def hdl_parameters_match(dut, desc: dict, log) -> tuple[bool, int]:
    """Read the HDL parameters back (where the simulator exposes them) and compare.
    Returns (all equal, how many were readable)."""
    ok, checked = True, 0
    for name, value in desc["rtl_parameters"].items():
        try:
            got = int(getattr(dut, name).value)
        except (AttributeError, TypeError, ValueError):
            continue  # not visible through VPI on this simulator
        checked += 1
        if got != int(value):
            log.error(f"HDL parameter {name}={got} but the project says {value}")
            ok = False
    return ok, checked


async def run_once(dut, driver, desc, xq, expected, checker, label, timeout) -> int:
    monitor = OutputMonitor(dut, desc["P"])
    task = cocotb.start_soon(monitor.run())
    await driver.load(xq)
    await driver.start()
    start_edge = monitor.edges
    while monitor.done_edge is None:
        await RisingEdge(dut.clk)
        if monitor.edges - start_edge > timeout:
            checker.error(f"{label}: no `done` after {timeout} cycles")
            break
    await RisingEdge(dut.clk)
    task.cancel()
    checker.check(monitor.words, expected.reshape(desc["O"], -1), label)
    return int(dut.cycles.value.to_unsigned())


@cocotb.test()
async def test_layer_bit_exact(dut):
    desc = load_project(PROJECT)
    model = load_golden(PROJECT)
    x_stored, y_stored = load_vectors(PROJECT)
    seed = int(os.environ.get("COCOTB_RANDOM_SEED", "1"))
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    runs = int(os.environ.get("KEP_RANDOM_RUNS", "2"))

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.start.value = 0
    dut.x_we.value = 0
    dut.x_addr.value = 0
    dut.x_data.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    params_ok, params_checked = hdl_parameters_match(dut, desc, dut._log)
    npix = desc["HO"] * desc["WO"]
    checker = Checker(dut._log, desc["P"], npix, desc["O"])
    driver = InputDriver(dut, rng)
    timeout = 4 * desc["dense_cycles"] + 10 * desc["O"] * desc["tiles"] + 1000
    cycles = []
    # 1) the stored vector against the stored golden output
    cycles.append(await run_once(dut, driver, desc, x_stored, y_stored, checker, "stored", timeout))
    # 2) random inputs against the model
    for i in range(runs):
        xq = nprng.integers(-127, 128, size=x_stored.shape, dtype=np.int64).astype(np.int8)
        expected = model.run(xq[None])[0]
        cycles.append(await run_once(dut, driver, desc, xq, expected, checker, f"random{i}", timeout))
    summary = {"mismatches": checker.errors, "outputs_compared": checker.compared,
               "runs": 1 + runs, "cycles": cycles[0], "cycles_per_run": cycles,
               "hdl_parameters_ok": params_ok,
               "hdl_parameters_checked": params_checked, "seed": seed}
    result_file = os.environ.get("KEP_RESULT_FILE")
    if result_file:
        Path(result_file).write_text(json.dumps(summary, indent=2))
    dut._log.info(f"kep: {summary}")
    assert params_ok, "HDL parameters differ from the project"
    assert checker.errors == 0, f"{checker.errors} checker errors"
