"""The embedded demos: synthetic X-ray-like data (classification) or SYNTHETIC ultrasound with lesion
masks (``--task segmentation``), and a teacher trained on it on first use.

Nothing is downloaded. The teacher (timm ``resnet18``, 1 channel, 2 classes) is trained once,
seeded, and cached as safetensors in ``$EDGEKD_CACHE`` (default ``~/.cache/edgekd``); later runs
reuse it. The images are procedurally generated and are NOT real patients: the demo shows the
pipeline, not clinical performance.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ._io import cache_root
from .config import Preprocessing
from .data import Dataset
from .data.synthetic import load_synthetic

DEMO_ARCH = "resnet18"
DEMO_EPOCHS = 4
DEMO_VERSION = 4  # bump when the synthetic generator or the recipe changes (4: the recipe on edgekd.train's loop)


def cache_dir() -> Path:
    return cache_root()


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


SEG_DEMO_TEACHER = "smp:Unet:resnet34"
SEG_DEMO_STEPS = 600  # batch 8: 6 passes over the 800 training images
SEG_DEMO_VERSION = 1


def demo_seg_teacher_and_data(
    pre: Preprocessing, *, seed: int = 0, max_samples: int | None = None, log: Callable[[str], None] = print
):
    """The segmentation demo: the SYNTHETIC ultrasound set, the teacher spec (``smp:Unet:resnet34``) and its weights.

    The teacher is trained once, seeded (:func:`train_seg_teacher`), and cached in :func:`cache_dir`.
    """
    from .data.synthetic_us import load_synthetic_ultrasound
    from .models import save_weights

    data = load_synthetic_ultrasound(pre, seed=seed, max_samples=max_samples)
    h, w = data.image_size
    n = len(data.train)
    arch = SEG_DEMO_TEACHER.split(":", 1)[1].replace(":", "-").lower()
    weights = cache_dir() / f"demo-seg-teacher-{arch}-{h}x{w}-n{n}-seed{seed}-v{SEG_DEMO_VERSION}.safetensors"
    if not weights.exists():
        from .models.segmentation import create_seg_teacher

        log(f"demo: training the segmentation demo teacher (U-Net ResNet-34, {SEG_DEMO_STEPS} steps on {n} images) "
            f"once; cached at {weights}")
        _, arch_name, encoder = SEG_DEMO_TEACHER.split(":")
        import torch

        torch.manual_seed(seed)
        model = create_seg_teacher(arch_name, encoder, data.channels, data.num_classes)
        dice = train_seg_teacher(model, data, steps=SEG_DEMO_STEPS, seed=seed)
        log(f"demo: segmentation teacher val Dice {dice:.4f}")
        save_weights(model, weights)
    return data, SEG_DEMO_TEACHER, weights


def train_seg_teacher(model, data, *, steps: int, seed: int = 0, batch_size: int = 8, lr: float = 2e-3,
                      evaluations: int = 6) -> float:
    """Supervised training of a segmentation model (CE + Dice on the masks, the "medical" views of
    :class:`~edgekd.distill.seg_augment.SegAugmenter`, AdamW with warm-up then cosine); the weights
    with the best val mean Dice are kept. Returns that val Dice."""
    import copy

    import torch

    from ._progress import track
    from .distill.objective import SEGMENTATION
    from .distill.schedule import lr_factor
    from .distill.seg_augment import SegAugmenter
    from .distill.seg_loss import seg_kd_loss
    from .models.predict import predict_logits

    pre = data.preprocessing
    aug = SegAugmenter("medical", mean=tuple(pre.mean), std=tuple(pre.std), channels=data.channels)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, 0.05))
    g = torch.Generator().manual_seed(seed)
    every = max(1, steps // evaluations)
    best, best_state = -1.0, None
    for step in track(range(1, steps + 1), f"demo segmentation teacher ({steps} steps)", total=steps):
        idx = torch.randint(len(data.train), (batch_size,), generator=g)
        x, y = aug(data.train.images[idx], data.train.masks[idx], seed=seed * 100_003 + step)
        model.train()
        out = model(x)
        loss = seg_kd_loss(out, out.detach(), y, temperature=1.0, alpha=1.0)  # alpha 1: the masks' CE + Dice only
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % every == 0 or step == steps:
            model.eval()
            dice = SEGMENTATION.score(predict_logits(model, data.val.images, 32), data.val.masks, data.num_classes)
            if dice > best:
                best, best_state = dice, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return best
