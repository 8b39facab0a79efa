"""The embedded demo: synthetic X-ray-like data and a small teacher trained on it on first use.

Nothing is downloaded. The teacher (timm ``resnet18``, 1 channel, 2 classes) is trained once,
seeded, and cached as safetensors in ``$EDGEKD_CACHE`` (default ``~/.cache/edgekd``); later runs
reuse it. The images are procedurally generated and are NOT real patients: the demo shows the
pipeline, not clinical performance.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .config import Preprocessing
from .data import Dataset
from .data.synthetic import load_synthetic

DEMO_ARCH = "resnet18"
DEMO_EPOCHS = 4
DEMO_VERSION = 4  # bump when the synthetic generator or the recipe changes (4: the recipe on edgekd.train's loop)


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEKD_CACHE", Path.home() / ".cache" / "edgekd"))


def demo_teacher_and_data(
    pre: Preprocessing, *, seed: int = 0, max_samples: int | None = None, log: Callable[[str], None] = print
) -> tuple[Dataset, str, Path]:
    """The demo dataset, the teacher spec (``timm:resnet18``) and its cached weights file."""
    from ._compat import import_timm
    from .models import save_weights
    from .train import train_classifier

    data = load_synthetic(pre, seed=seed, max_samples=max_samples)
    h, w = data.image_size
    n = len(data.train)  # a capped quick run trains (and caches) its own, smaller teacher
    weights = cache_dir() / f"demo-teacher-{DEMO_ARCH}-{h}x{w}-n{n}-seed{seed}-v{DEMO_VERSION}.safetensors"
    if not weights.exists():
        log(f"demo: training the demo teacher ({DEMO_ARCH}, {DEMO_EPOCHS} epochs on {n} images) once; "
            f"cached at {weights}")
        import torch

        torch.manual_seed(seed)
        model = import_timm().create_model(DEMO_ARCH, pretrained=False, in_chans=data.channels,
                                           num_classes=data.num_classes)
        res = train_classifier(model, data.train, data.val, epochs=DEMO_EPOCHS, seed=seed, desc="demo teacher")
        log(f"demo: teacher val AUC {res['best_val_auc']:.4f}")
        weights.parent.mkdir(parents=True, exist_ok=True)
        tmp = weights.with_suffix(".tmp")
        save_weights(model, tmp)
        tmp.replace(weights)
    return data, f"timm:{DEMO_ARCH}", weights
