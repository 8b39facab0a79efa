"""Metrics, below every other layer: training (distill/), models/ and reporting use them alike.

:mod:`.classification`: AUC, sensitivity/specificity at an operating point, calibration, bootstrap CIs.
:mod:`.segmentation`: Dice, IoU and HD95 from integer label maps, with bootstrap CIs over images.
"""
