"""FPGA export of sparse conv layers, verified bit for bit.

    quant     the integer golden model (int8 weights/activations, int32 accumulators,
              fixed-point requantization): the definition every other path must match
    project   `kepsparse hls generate`: HLS C++ + RTL + testbenches + vectors for one layer
    csim      `kepsparse hls csim`: g++ C simulation against the golden vectors
    sim       `kepsparse hls sim`: Verilator + cocotb RTL simulation, cycle count
    report    `kepsparse hls report`: cycles vs ideal and dense, utilisation, ROM bytes,
              open-synthesis resource estimate when available
    flow      run_layer_flow(): all of the above for one layer (the demo's entry point)
Templates live in hls/ (installed as kepsparse/_hls).
"""
from .quant import QuantLayer, quantize_layer, requantize
from .project import generate_project, load_golden, load_project
from .csim import run_csim
from .sim import run_sim
from .report import format_report, make_report
from .flow import run_layer_flow

__all__ = ["QuantLayer", "quantize_layer", "requantize", "generate_project", "load_golden",
           "load_project", "run_csim", "run_sim", "make_report", "format_report", "run_layer_flow"]
