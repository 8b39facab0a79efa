"""Metrics that training and evaluation code use without importing the benchmark layer (:mod:`edgekd.bench`).

:mod:`.segmentation`: Dice, IoU and HD95 from integer label maps, with bootstrap CIs over images.
"""
