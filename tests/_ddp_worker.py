"""One distillation of a small student without BatchNorm, run alone or as every process of `torchrun` (gloo).

    python tests/_ddp_worker.py OUT.pt                                    # one process
    python -m torch.distributed.run --nproc-per-node 2 tests/_ddp_worker.py OUT.pt

Plain teacher logits (no augmentation) and no BatchNorm: the only difference between the two runs
is that each step's batch is split between the processes and DDP averages their gradients, so the
trained weights must agree up to float summation order. Rank 0 writes the weights, the val
history and the world it ran in to OUT.pt.
"""
from __future__ import annotations

import sys

import torch


def main(out: str) -> None:
    from edgekd import _dist
    from edgekd.config import DistillConfig, Preprocessing
    from edgekd.data._base import Dataset, Split
    from edgekd.distill import distill
    from edgekd.distill.source import TeacherSignal

    torch.set_num_threads(1)
    world = _dist.setup(torch.device("cpu"))
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    images = {s: torch.randn(n, 1, 16, 16, generator=g) for s, n in (("train", 96), ("val", 48), ("test", 8))}
    labels = {s: (x.mean((1, 2, 3)) > 0).long() for s, x in images.items()}
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 2))
    with torch.no_grad():
        logits = {s: teacher(x) * 3 for s, x in images.items()}
    split = {s: Split(images[s], labels[s]) for s in images}
    data = Dataset(split["train"], split["val"], split["test"], 2, 1, (16, 16), ["a", "b"], "synthetic",
                   Preprocessing(channels=1))
    signal = TeacherSignal.plain(images["train"], labels["train"], logits["train"], logits["val"])
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                  torch.nn.Flatten(), torch.nn.Linear(32, 2))
    cfg = DistillConfig(batch_size=16, evaluations=6, min_fraction=0.5, augment="none")
    res = distill(student, data, signal, cfg, steps=60, seed=0)
    if world.main:
        torch.save({"state": res.model.state_dict(), "history": res.history, "best_step": res.best_step,
                    "world": world.describe()}, out)
    _dist.teardown()


if __name__ == "__main__":
    main(sys.argv[1])
