"""``edgekd train-teacher``: one call to :func:`edgekd.train.train_teacher`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import EdgekdError
from . import _options as opt
from . import app, fail, log_console


@app.command("train-teacher")
def train_teacher(
    data: Path = opt.data_option(...),
    arch: str = typer.Option("resnet50", help="timm architecture (any name from timm.list_models())."),
    out: Path = typer.Option(Path("teacher"), help="Output folder: teacher.safetensors, teacher.onnx, report.json/md, training_curve.png."),
    weights: Optional[Path] = typer.Option(None, help="Pretrained weights for --arch, a local .safetensors or state_dict .pt/.pth (read with weights_only=True; nothing is downloaded). First conv adapted to the data's channels, head replaced for its classes. Omit to train from scratch."),
    image_size: Optional[int] = opt.image_size_option(),
    mean: Optional[str] = opt.mean_option(),
    std: Optional[str] = opt.std_option(),
    max_samples: Optional[int] = opt.max_samples_option(),
    max_steps: Optional[int] = typer.Option(None, help="Training budget in optimizer steps (default: distillation's rule, max(1500, 12 epochs) capped at 10000; early stopping on val may end it sooner)."),
    head_steps: Optional[int] = typer.Option(None, help="Steps of it with the backbone frozen, training the new head alone (default: 10 % with --weights, 0 from scratch)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate of the whole network (default 1e-4 with --weights, 3e-3 from scratch)."),
    head_lr: float = typer.Option(1e-3, help="Peak learning rate of the head phase."),
    batch_size: int = typer.Option(64, help="Batch size."),
    augment: str = opt.augment_option("medical", who="of the training images (as in distillation)"),
    allow_flips: bool = opt.allow_flips_option(),
    mixup: float = opt.mixup_option(0.0, default_text="0"),
    device: str = opt.device_option(),
    seed: int = opt.seed_option(),
    overwrite: bool = typer.Option(False, help="Replace an existing --out folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the result and errors."),
) -> None:
    """Fine-tune a timm architecture on your data (head first, then the whole network) into a teacher for compress."""
    from .._compat import quiet_third_party

    quiet_third_party()
    console = log_console()
    log = (lambda msg: None) if quiet else (lambda msg: console.print(msg, highlight=False))
    try:
        from ..train import TeacherTrainConfig
        from ..train import train_teacher as run

        cfg = TeacherTrainConfig(data=data, arch=arch, out=out, weights=weights,
                                 preprocessing=opt.preprocessing(image_size, mean, std), max_samples=max_samples,
                                 max_steps=max_steps, head_steps=head_steps, lr=lr, head_lr=head_lr,
                                 batch_size=batch_size, augment=augment, flips=allow_flips, mixup=mixup, device=device,
                                 seed=seed, overwrite=overwrite)
        result = run(cfg, log=log)
    except EdgekdError as exc:
        raise fail(exc)
    m = result.report["metrics"]
    ci = m["test"].get("auc_ci")
    ci_text = f" (95 % CI {ci[0]:.4f} … {ci[1]:.4f})" if ci else ""
    typer.echo(f"teacher timm:{arch}: val AUC {m['val']['auc']:.4f}, test AUC {m['test']['auc']:.4f}{ci_text}; "
               f"{out / 'teacher.onnx'} (checked against torch), report {out / 'report.md'}")
