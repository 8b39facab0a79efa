"""Where the student's training batches and the teacher's answers to them come from.

Three modes, one interface (:meth:`TeacherSignal.batch`):

* **online**: every batch is a fresh random view (:mod:`edgekd.distill.augment`) and the teacher
  is run on exactly that view. Chosen when it costs no more teacher calls than a cache would (the
  budget covers few passes over the data), or on a GPU.
* **cached**: ``V`` random views of every training image are made once, seeded, stored as 8-bit
  pixels (memory-mapped from the stage cache) with the teacher's logits for each; a batch picks a
  view per image. Both models see the very same stored 8-bit view. Chosen when the budget covers
  many passes over a small set on a CPU, where running the teacher on every batch would cost more
  than training the student.
* **plain**: no augmentation (``--augment none``): the clean images and the teacher's logits on them.

Unlabelled images (``--unlabelled``) join the pool with label ``-1``: they get soft targets only.
Segmentation uses the same three modes: the pool's labels are masks (N×H×W, an unlabelled image's
mask all ``-1``), a view moves the mask with the image, and a cached view stores its mask and the
teacher's per-pixel logits (float16, to halve the cache) beside its pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data.lazy import concat
from ..errors import InputError, did_you_mean
from .augment import Augmenter

TEACHER_MODES = ("auto", "online", "cached")
MAX_CACHED_VIEWS = 32
MIN_CACHED_VIEWS = 4
PASSES_PER_VIEW = 4  # cached views: each is seen about this many times over the budget
MAX_CACHE_BYTES = 2 * 1024**3  # the 8-bit view cache is capped at this size (fewer views, else online)

Teacher = Callable[[torch.Tensor], torch.Tensor]


def check_teacher_mode(mode: str, views: int | None) -> None:
    if mode not in TEACHER_MODES:
        raise InputError(f"unknown teacher mode '{mode}'{did_you_mean(str(mode), TEACHER_MODES)}: "
                         f"use one of {', '.join(TEACHER_MODES)}")
    if views is not None and (not isinstance(views, int) or isinstance(views, bool) or not 1 <= views <= 256):
        raise InputError(f"cached views must be an integer in [1, 256], got {views!r}")


@dataclass
class Batch:
    images: torch.Tensor  # N×C×H×W, what the student and the teacher both saw
    teacher: torch.Tensor  # N×K teacher logits on exactly those images (N×K×H×W for segmentation)
    labels: torch.Tensor  # N int64, -1 for unlabelled images (segmentation: N×H×W masks of the view)
    partner_labels: torch.Tensor  # N int64: label of the image mixed in (= labels when not mixed)
    lam: torch.Tensor  # N float32: weight of the image's own label
    features: torch.Tensor | None = None  # the teacher's last feature map on those images (--feature-kd)


@dataclass
class Pool:
    """The images distillation trains on: labelled train first, then unlabelled ones (label -1).

    ``images`` is a tensor, or lazy (:mod:`edgekd.data.lazy`) when the train split is read from disk.
    """

    images: torch.Tensor
    labels: torch.Tensor
    labelled: int  # how many of them carry a label

    @classmethod
    def of(cls, train_images: torch.Tensor, train_labels: torch.Tensor,
           unlabelled: torch.Tensor | None = None) -> "Pool":
        if unlabelled is None or len(unlabelled) == 0:
            return cls(train_images, train_labels.long(), len(train_labels))
        images = concat(train_images, unlabelled)
        none = torch.full((len(unlabelled), *train_labels.shape[1:]), -1, dtype=torch.long)  # masks: all -1
        labels = torch.cat([train_labels.long(), none])
        return cls(images, labels, len(train_labels))

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class TeacherSignal:
    """The teacher's view of the training pool and of val, in one of the three modes."""

    mode: str  # "online" | "cached" | "plain"
    pool: Pool
    val: torch.Tensor  # N_val×K teacher logits on the clean val images
    clean: torch.Tensor  # N_pool×K teacher logits on the clean pool images
    augmenter: Augmenter | None = None
    teacher: Teacher | None = None  # online mode only
    views: np.ndarray | None = None  # cached: V×N×C×H×W uint8 pixels (may be a memmap)
    view_logits: np.ndarray | None = None  # cached: V×N×K
    view_partner: np.ndarray | None = None  # cached: V×N global index of the image mixed in
    view_lam: np.ndarray | None = None  # cached: V×N
    view_masks: np.ndarray | None = None  # cached segmentation: V×N×H×W int16 masks of each view
    mean: torch.Tensor | None = None  # 1×C×1×1, to turn stored pixels back into model inputs
    std: torch.Tensor | None = None
    info: dict = field(default_factory=dict)
    feature_module: torch.nn.Module | None = None  # online + --feature-kd: the teacher as a timm module (training device)

    @classmethod
    def plain(cls, train_images: torch.Tensor, train_labels: torch.Tensor, train_logits: torch.Tensor,
              val_logits: torch.Tensor) -> "TeacherSignal":
        """No augmentation: precomputed teacher logits on the clean train and val images."""
        return cls("plain", Pool.of(train_images, train_labels), val_logits, train_logits,
                   info={"mode": "plain", "why": "precomputed logits on the clean images"})

    def attach_views(self, arrays: dict[str, np.ndarray]) -> None:
        """Cached mode: the views, their teacher logits and mixing records (from make_views or load_views)."""
        self.views, self.view_logits = arrays["views"], arrays["view_logits"]
        self.view_partner, self.view_lam = arrays["view_partner"], arrays["view_lam"]
        self.view_masks = arrays.get("view_masks")

    @property
    def train(self) -> torch.Tensor:
        """Teacher logits on the clean labelled train images (Taylor importance, statistics)."""
        return self.clean[: self.pool.labelled]

    def batch(self, idx: torch.Tensor, seed: int) -> Batch:
        """The batch of pool indices ``idx``; ``seed`` fixes its random view (online/cached)."""
        labels = self.pool.labels[idx]
        if self.mode == "plain":
            return Batch(self.pool.images[idx], self.clean[idx], labels, labels, torch.ones(len(idx)))
        if self.mode == "online":
            images, labels, partner_labels, lam, _ = self.augmenter.view(self.pool.images[idx], labels, seed)
            feats = None
            with torch.no_grad():
                if self.feature_module is not None:  # on the training device (features stay there)
                    from .._device import device_of, to_device

                    feats = self.feature_module.forward_features(to_device(images, device_of(self.feature_module)))
                    t = self.feature_module.forward_head(feats).float()
                else:
                    t = self.teacher(images).float()
            return Batch(images, t, labels, partner_labels, lam, feats)
        g = torch.Generator().manual_seed(seed)
        v = torch.randint(self.views.shape[0], (len(idx),), generator=g).numpy()
        i = idx.numpy()
        pix = torch.from_numpy(np.asarray(self.views[v, i])).float().div_(255.0)
        images = (pix - self.mean) / self.std
        t = torch.from_numpy(np.asarray(self.view_logits[v, i])).float()
        partner = torch.from_numpy(np.asarray(self.view_partner[v, i])).long()
        lam = torch.from_numpy(np.asarray(self.view_lam[v, i])).float()
        if self.view_masks is not None:  # segmentation: the view's own masks
            masks = torch.from_numpy(np.asarray(self.view_masks[v, i])).long()
            return Batch(images, t, masks, masks, lam)
        return Batch(images, t, labels, self.pool.labels[partner], lam)


def cached_view_count(n_pool: int, steps: int, batch_size: int, image_bytes: int, requested: int | None) -> int:
    """Views per image for the cache: each seen ~PASSES_PER_VIEW times over the budget, within the byte cap.

    ``image_bytes``: what one view of one image costs in the cache (pixels; for segmentation also its
    mask and the teacher's per-pixel logits)."""
    if requested is not None:
        v = requested
    else:
        passes = steps * batch_size / max(1, n_pool)
        v = min(MAX_CACHED_VIEWS, max(MIN_CACHED_VIEWS, math.ceil(passes / PASSES_PER_VIEW)))
    cap = max(1, MAX_CACHE_BYTES // max(1, n_pool * image_bytes))
    return int(min(v, cap))


def choose_mode(mode: str, *, augment: bool, n_pool: int, steps: int, batch_size: int, views: int,
                device: str = "cpu", features: bool = False, view_bytes: int = 0) -> tuple[str, str]:
    """(mode, why): deterministic, so that the same settings always train the same way.

    ``view_bytes``: what one view of one image costs in the cache; in auto mode a pool whose single
    view would pass :data:`MAX_CACHE_BYTES` is taught online (the cache is built in memory)."""
    if features:
        return "online", "--feature-kd needs the teacher's features for every view: the teacher runs on each batch"
    if not augment:
        return "plain", "--augment none: the clean images and the teacher's logits on them"
    if mode == "online":
        return "online", "--teacher-mode online"
    if mode == "cached":
        return "cached", "--teacher-mode cached"
    online_calls = steps * batch_size
    cached_calls = views * n_pool
    if n_pool * view_bytes > MAX_CACHE_BYTES:
        return "online", (f"one cached view of the {n_pool} images would take {n_pool * view_bytes / 2**30:.1f} GiB, "
                          f"over the cache's {MAX_CACHE_BYTES / 2**30:.0f} GiB: the teacher runs on each batch")
    if device.startswith("cuda"):
        return "online", "the teacher runs on the GPU: a fresh view on every batch costs little"
    if online_calls <= cached_calls:
        return "online", (f"the budget ({steps} steps × {batch_size}) asks the teacher no more often online "
                          f"({online_calls} images) than a cache of {views} views would ({cached_calls})")
    return "cached", (f"the teacher on every batch would label {online_calls} images; {views} cached views of "
                      f"{n_pool} images need {cached_calls} (CPU: the teacher would cost more than the student)")


def build_signal(mode: str, pool: Pool, val_images: torch.Tensor, teacher: Teacher, augmenter: Augmenter, *,
                 views: int, seed: int, folder: Path | None = None, why: str = "") -> TeacherSignal:
    """Run the teacher on val and the clean pool, and (cached) make and label the views.

    With ``folder``, cached views are written there as .npy files (the stage cache's entry).
    """
    clean = teacher(pool.images)
    val = teacher(val_images)
    mean = augmenter.mean
    std = augmenter.std
    info = {"mode": mode, "why": why, "augmentation": augmenter.describe(), "pool_images": len(pool),
            "unlabelled_images": len(pool) - pool.labelled}
    sig = TeacherSignal(mode, pool, val, clean, augmenter=augmenter, mean=mean, std=std, info=info)
    if mode == "online":
        sig.teacher = teacher
    elif mode == "cached":
        arrays = make_views(pool, teacher, augmenter, views, seed, mean, std)
        if folder is not None:
            for name, a in arrays.items():
                np.save(folder / f"{name}.npy", a)
        sig.attach_views(arrays)
        info["views"] = views
    return sig


CHUNK = 256  # images augmented (and mixed) together when making cached views


def make_views(pool: Pool, teacher: Teacher, augmenter: Augmenter, views: int, seed: int,
               mean: torch.Tensor, std: torch.Tensor) -> dict[str, np.ndarray]:
    """``views`` seeded random 8-bit views of every pool image and the teacher's logits on each."""
    from .._progress import track

    n = len(pool)
    c, h, w = pool.images.shape[1:]
    masks = pool.labels.ndim == 3  # segmentation: each view keeps its own mask
    pix = np.empty((views, n, c, h, w), dtype=np.uint8)
    partner = np.empty((views, n), dtype=np.int64)
    lam = np.empty((views, n), dtype=np.float32)
    view_masks = np.empty((views, n, h, w), dtype=np.int16) if masks else None
    logits = None
    jobs = [(v, s) for v in range(views) for s in range(0, n, CHUNK)]
    for v, s in track(jobs, f"teacher on {views} augmented views", total=len(jobs)):
        e = min(n, s + CHUNK)
        images, labels, _, w8, mixed_with = augmenter.view(pool.images[s:e], pool.labels[s:e], _view_seed(seed, v, s))
        q = ((images * std + mean).clamp(0, 1) * 255.0).round().to(torch.uint8)
        x = (q.float() / 255.0 - mean) / std  # what the student will see: the stored 8-bit view
        t = _batched(teacher, x).float().numpy()
        if logits is None:  # per-pixel logits are stored as float16: half the cache, ample for soft targets
            logits = np.empty((views, n, *t.shape[1:]), dtype=np.float16 if masks else np.float32)
        pix[v, s:e], logits[v, s:e] = q.numpy(), t
        partner[v, s:e], lam[v, s:e] = mixed_with.numpy() + s, w8.numpy()
        if view_masks is not None:
            view_masks[v, s:e] = labels.numpy()
    out = {"views": pix, "view_logits": logits, "view_partner": partner, "view_lam": lam}
    if view_masks is not None:
        out["view_masks"] = view_masks
    return out


def _batched(teacher: Teacher, x: torch.Tensor, limit: int = 1 << 24) -> torch.Tensor:
    """The teacher on ``x`` in pieces whose outputs stay under ``limit`` values (per-pixel logits are big)."""
    per = max(1, int(np.prod(x.shape[2:])) if x.ndim == 4 else 1)
    step = max(1, min(len(x), limit // (per * 8)))
    return torch.cat([teacher(x[i:i + step]) for i in range(0, len(x), step)]) if len(x) > step else teacher(x)


VIEW_ARRAYS = ("views", "view_logits", "view_partner", "view_lam")


def load_views(folder: Path) -> dict[str, np.ndarray]:
    names = VIEW_ARRAYS + (("view_masks",) if (folder / "view_masks.npy").exists() else ())
    return {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in names}


def _view_seed(seed: int, view: int, start: int) -> int:
    return (int(seed) * 1_000_003 + view * 7919 + start) % (2**63)


def step_seed(seed: int, step: int) -> int:
    """The seed of one training step's random view (online mode) or view choice (cached)."""
    return (int(seed) * 2_654_435_761 + 97 * step + 1) % (2**63)
