"""``kepsparse.torch``: the torch drop-in (imports torch; ``import kepsparse`` does not).

    import kepsparse.torch
    fast = kepsparse.torch.sparsify(model)   # pruned Conv2d -> SparseConv2d (kepsparse kernels)

See ``kepsparse/runtime/torch_module.py``.
"""
from .runtime.torch_module import SparseConv2d, sparsify

__all__ = ["SparseConv2d", "sparsify"]
