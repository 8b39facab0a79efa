"""Options that more than one command takes (data, preprocessing, views, seed), defined once.

Each function returns a fresh ``typer.Option`` for a command's signature; :func:`preprocessing`
turns the preprocessing options into the library's :class:`~edgekd.config.Preprocessing`.
"""
from __future__ import annotations

from typing import Any, Optional

import typer

from ..errors import InputError

DATA_HELP = "Dataset: .npz in the MedMNIST layout, or a folder with train/ val/ test/ of class subfolders."


def data_option(default: Any = None, extra: str = "") -> Any:
    return typer.Option(default, help=DATA_HELP + (f" {extra}" if extra else ""))


def image_size_option() -> Any:
    return typer.Option(None, help="Resize images to N×N (bilinear).")


def mean_option() -> Any:
    return typer.Option(None, help="Per-channel mean after scaling to [0,1] (default 0.5).")


def std_option() -> Any:
    return typer.Option(None, help="Per-channel std (default 0.5).")


def max_samples_option() -> Any:
    return typer.Option(None, help="Cap each split to N samples (quick runs).")


def seed_option() -> Any:
    return typer.Option(0, min=0, max=2**32 - 1, help="Seed for every random choice (0 to 2**32-1).")


def device_option() -> Any:
    return typer.Option("auto", help="Where training runs: auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda "
                                     "or cuda:N. Export, lowering and the benchmark always run on the CPU.")


def augment_option(default: Optional[str] = None, who: str = "the teacher and student both see") -> Any:
    return typer.Option(default, help=f"Augmentation {who}: medical (default: small affine, brightness, contrast, "
                                      "gamma, noise) or none.")


def allow_flips_option() -> Any:
    return typer.Option(False, "--allow-flips",
                        help="Also flip images left-right (off by default: anatomy has a left and a right).")


def mixup_option(default: Optional[float] = None, default_text: str = "0.5") -> Any:
    return typer.Option(default, help=f"Share of batches mixed pairwise (mixup; default {default_text}; 0 disables).")


def floats(text: Optional[str], option: str) -> Optional[tuple[float, ...]]:
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"{option} '{text}' must be comma-separated numbers, e.g. 0.5 or 0.485,0.456,0.406") from None


def preprocessing(image_size: Optional[int], mean: Optional[str], std: Optional[str]):
    """The :class:`~edgekd.config.Preprocessing` of ``--image-size``, ``--mean`` and ``--std``."""
    from dataclasses import replace

    from ..config import Preprocessing

    pre = Preprocessing(image_size=image_size)
    if mean is not None:
        pre = replace(pre, mean=floats(mean, "--mean"))
    if std is not None:
        pre = replace(pre, std=floats(std, "--std"))
    return pre

