"""Pruning, upstream of the sparse formats (torch is imported only when a function needs it).

``kepsparse.prune.kep``: KEP - Kernel Elements Pruning (Zhang et al., Neural Networks 180
(2024) 106708, doi:10.1016/j.neunet.2024.106708; formulation reconstructed from the abstract).
``kepsparse.prune.masks``: KEP's mask selection on NumPy weights (no torch).
``kepsparse.prune.common``: machinery shared by every method (specs, checkpoints, FLOPs,
masked training, progress bars). ``kepsparse.prune.cli``: the ``kepsparse prune`` command.
"""
from .kep import DOI as KEP_DOI, KEPConfig, PenaltySchedule, kep_prune, plot_report
from .masks import LayerMask, random_masks, select_mask, select_masks

__all__ = ["KEP_DOI", "KEPConfig", "PenaltySchedule", "kep_prune", "plot_report", "LayerMask",
           "select_mask", "select_masks", "random_masks"]
