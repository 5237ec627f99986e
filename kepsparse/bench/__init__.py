"""Layer benchmark suite: every registered kernel vs dense torch and onnxruntime.

    kepsparse bench --quick                      # smoke test
    kepsparse bench --networks resnet18 --batches 1 --threads 2 --json r.json --plot r.png

Layer shapes are data (``kepsparse/bench/shapes/*.json``); ``cases`` builds the weights of each
sparsity structure, ``runner`` verifies and times every contender, ``report`` summarizes
(geometric means, the issue's targets), prints tables, writes markdown and the plot.
"""
from .cases import STRUCTURES, LayerShape, load_networks, make_weight
from .runner import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench", "load_networks", "make_weight", "LayerShape", "STRUCTURES"]
