"""Filter (output-channel) pruning: five importance criteria, dependency-aware physical removal
with Torch-Pruning, fine-tuning schemes, composition with KEP.

Criteria (``kepsparse.prune.filters.criteria``; each formulation is a reconstruction from the
paper's abstract, every open choice a parameter):

- ``similarity``: Li et al., Information Sciences 2024, doi:10.1016/j.ins.2024.121418
- ``lfrns``: Fang & Yin, Alexandria Eng. J. 119 (2025), doi:10.1016/j.aej.2024.12.118
- ``fpar``: Chen et al., Int. J. Mach. Learn. & Cyber. 2024, doi:10.1007/s13042-023-02076-1
- ``fcs``: Yang & Xiao, Applied Intelligence 52 (2022), doi:10.1007/s10489-022-03403-9
- ``l1``: Li et al., ICLR 2017, arXiv:1608.08710 (baseline)

    from kepsparse.prune.filters import filter_prune
    pruned, report = filter_prune(model, loaders, "similarity", flops_reduction=0.5,
                                  finetune_scheme="kd")

Importing this package does not import torch.
"""
from __future__ import annotations

from .criteria import CRITERIA, PAPER_FINETUNE, make_criterion

METHODS = tuple(CRITERIA)


def filter_prune(*args, **kwargs):
    from .pipeline import filter_prune as _fp
    return _fp(*args, **kwargs)


def register_filter_methods(prune_subparsers) -> None:
    """Add ``similarity``, ``lfrns``, ``fpar``, ``fcs`` and ``l1`` to ``kepsparse prune``."""
    from .cli import register_filter_methods as _reg
    _reg(prune_subparsers)


__all__ = ["CRITERIA", "METHODS", "PAPER_FINETUNE", "filter_prune", "make_criterion",
           "register_filter_methods"]
