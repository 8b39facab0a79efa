"""Train/val/test splits of a manifest: given ones checked for patient leakage, or made by patient.

``make_group_splits`` keeps every group (a patient, or whatever column ``--split-by`` names) on one
side and stratifies by label: groups are shuffled with the seed; each class held by at least 3
groups first gets one (its smallest) in val, test and train, so its AUC is defined everywhere;
then the largest groups are placed first, each in the split whose class counts are furthest below
their share (``fractions``, default 70/15/15) of every class — a greedy fit of per-split class
counts to the fractions. Same samples, fractions and seed -> the same splits.

``check_leakage`` refuses a given split where one group appears in two splits (the classic
medical-imaging mistake: the model is tested on a patient it was trained on).
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError
from ._base import shown

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


def check_fractions(fractions) -> tuple[float, float, float]:
    """Three positive fractions summing to 1 (within 1e-6), or a one-line DataError."""
    try:
        f = tuple(float(x) for x in fractions)
    except (TypeError, ValueError):
        f = ()
    if len(f) != 3 or not all(np.isfinite(f)) or min(f) <= 0 or abs(sum(f) - 1.0) > 1e-6:
        raise DataError(f"split fractions {fractions!r} are not valid: pass --split-fractions TRAIN,VAL,TEST, "
                        "three positive numbers that sum to 1 (e.g. 0.7,0.15,0.15)")
    return f  # type: ignore[return-value]


def check_leakage(groups: list[str], splits: list[str], column: str, where: str, fix: str | None = None) -> None:
    """A one-line DataError naming the first group found in two splits (and how many leak in all)."""
    seen: dict[str, set[str]] = {}
    for g, s in zip(groups, splits):
        seen.setdefault(g, set()).add(s)
    leaking = [g for g, ss in seen.items() if len(ss) > 1]
    if leaking:
        g = leaking[0]
        both = " and ".join(s for s in SPLITS if s in seen[g])
        more = f" ({len(leaking)} {column} values leak in all)" if len(leaking) > 1 else ""
        raise DataError(f"{where}: {column} {shown(g, 60)} is in {both}{more}, so the model would be tested on a "
                        f"patient it was trained on: {fix or f'put each {column} in one split, or drop the split column and pass --split-by {column}'}")


def make_group_splits(groups: list[str], labels: np.ndarray, num_classes: int,
                      fractions=DEFAULT_FRACTIONS, seed: int = 0) -> list[str]:
    """One split name per sample; every group on one side, class counts near ``fractions`` in each split."""
    frac = np.asarray(check_fractions(fractions))
    labels = np.asarray(labels, dtype=np.int64)
    names = sorted(set(groups))
    index = {g: i for i, g in enumerate(names)}
    member = np.array([index[g] for g in groups], dtype=np.int64)
    counts = np.zeros((len(names), num_classes), dtype=np.int64)
    np.add.at(counts, (member, labels), 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]  # largest first, ties in seeded order
    total = np.maximum(counts.sum(axis=0), 1).astype(np.float64)
    target = frac[:, None] * counts.sum(axis=0)[None, :]  # split × class
    have = np.zeros_like(target)
    side = np.full(len(names), -1, dtype=np.int64)
    # first, every class held by 3 or more groups gets one in val, test and train (rarest class first, the
    # smallest such group in seeded order): a class missing from val or test would leave its AUC undefined
    holders = counts > 0
    for c in np.argsort(holders.sum(axis=0), kind="stable"):
        if holders[:, c].sum() < 3:
            continue
        for s in (1, 2, 0):
            if have[s, c] > 0:
                continue
            free = [g for g in order if holders[g, c] and side[g] < 0]
            g = min(free, key=lambda g: counts[g].sum())
            side[g] = s
            have[s] += counts[g]
    for g in order:
        if side[g] >= 0:
            continue
        v = counts[g]
        # squared relative misfit of every split's class counts after placing g in split s
        costs = [(((have + np.eye(3)[s][:, None] * v[None, :]) - target) / total) ** 2 for s in range(3)]
        s = int(np.argmin([c.sum() for c in costs]))
        side[g] = s
        have[s] += v
    return [SPLITS[side[m]] for m in member]
