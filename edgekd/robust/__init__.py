"""Robustness under acquisition shift: does the small model fail where the teacher does not?

:mod:`.shifts` is the fixed, seeded set of shifts (noise, speckle, blur, contrast, gamma, JPEG,
rotation, translation at three severities each); :mod:`.evaluate` scores any model under each
with a metric passed in (ROC AUC, mean Dice, ...); :mod:`.budget` turns ``max_robust_drop`` into
the shipping rule that :mod:`edgekd.ship` applies.
"""
from .evaluate import Robustness, ShiftScore, robustness
from .shifts import DEFAULT_SHIFTS, KINDS, Shift, shifted, shifted_masks

__all__ = ["DEFAULT_SHIFTS", "KINDS", "Robustness", "Shift", "ShiftScore", "robustness", "shifted", "shifted_masks"]
