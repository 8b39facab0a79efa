"""``edgekd compress``: one call to :func:`edgekd.api.compress`."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ..errors import EdgekdError, InputError
from . import _options as opt
from . import app, fail, log_console, print_whole


DEFAULT_SEARCH_BUDGET = "30m"  # --search without --search-budget


class OperatingPoint(str, Enum):
    """How each model's binary threshold is chosen on val (edgekd.metrics.classification)."""

    teacher_sensitivity = "teacher-sensitivity"
    youden = "youden"


@app.command()
def compress(
    task: str = typer.Option("classification", help="classification (N×K logits) or segmentation (N×K×H×W logits and masks; demo: synthetic ultrasound)."),
    teacher: Optional[str] = typer.Option(None, help="Teacher: .onnx, TorchScript .pt, torch.export .pt2, a pickled model (needs --trust-checkpoint), or timm:<arch> with --teacher-weights. Omit with --data to run the demo."),
    data: Optional[Path] = typer.Option(None, help="Dataset: .npz in the MedMNIST layout, a folder with train/ val/ test/ of class subfolders, or a .csv/.json manifest (file,label[,split][,patient_id]) of images or DICOM files (or a folder holding one); segmentation: .npz with {split}_images/{split}_masks, or {split}/images/ + {split}/masks/."),
    target: str = typer.Option("intel-cpu", help="Target profile (see `edgekd targets list`)."),
    out: Path = typer.Option(Path("build"), help="Output folder for models and report."),
    teacher_weights: Optional[Path] = typer.Option(None, help="Weights for a timm teacher (.pt state_dict or .safetensors)."),
    trust_checkpoint: bool = typer.Option(False, help="Allow unpickling a full nn.Module (can run arbitrary code)."),
    student: Optional[str] = typer.Option(None, help="Student: from-teacher (the teacher's own network shrunk; the default when the teacher converts to torch layers) or a timm name (else the target profile's zoo student)."),
    student_weights: Optional[Path] = typer.Option(None, help="Pretrained weights for a zoo student (.safetensors or a weights_only state_dict; input channels adapted, head re-initialised when the classes differ)."),
    unlabelled: Optional[Path] = typer.Option(None, help="Extra images without labels (a folder, or an .npz with images only) that the teacher labels for distillation."),
    image_size: Optional[int] = opt.image_size_option(),
    mean: Optional[str] = opt.mean_option(),
    std: Optional[str] = opt.std_option(),
    window: Optional[str] = typer.Option(None, help="DICOM window C,W (center,width, e.g. 40,400) for every file, or minmax (each image's own range); default: each file's VOI LUT or window, else its full stored range."),
    frame: int = typer.Option(0, min=0, help="Frame of a multi-frame DICOM object (0: the first)."),
    split_by: Optional[str] = typer.Option(None, help="Manifest column to split by, e.g. patient_id: seeded, stratified train/val/test that keep each patient on one side (file: each image alone)."),
    split_fractions: Optional[str] = typer.Option(None, help="Train,val,test shares for --split-by (default 0.7,0.15,0.15)."),
    max_steps: Optional[int] = typer.Option(None, help="Distillation budget in optimizer steps (default: max(1500, 12 epochs), capped at 10000; prune fine-tunes, recovery and QAT get 8/30/10 % of it)."),
    batch_size: Optional[int] = typer.Option(None, help="Images per training step (default 64; segmentation 8); under torchrun each step's batch is split between the processes."),
    augment: Optional[str] = opt.augment_option(),
    allow_flips: bool = opt.allow_flips_option(),
    mixup: Optional[float] = opt.mixup_option(),
    feature_kd: Optional[float] = typer.Option(None, help="Weight of a FitNets feature-hint loss (timm teachers; runs the teacher online; default 0: logits only)."),
    teacher_mode: Optional[str] = typer.Option(None, help="auto (default), online (teacher on every batch) or cached (augmented views labelled once)."),
    temperature: Optional[float] = typer.Option(None, help="Distillation temperature T (default 4; segmentation 1, per pixel)."),
    alpha: Optional[float] = typer.Option(None, help="Weight of the label CE term; 1-alpha goes to T²·KL (default 0.3)."),
    prune_ratio: Optional[float] = typer.Option(None, help="Fraction of the student's MACs to remove (default 0.8; segmentation: 0, depth pruning only; 0 disables channel pruning)."),
    prune_steps: Optional[int] = typer.Option(None, help="Iterative pruning steps (default 3)."),
    prune_depth: Optional[int] = typer.Option(None, help="Whole blocks to remove before channel pruning (default: half of the removable ones; 0: none). Fewer layers run faster on CPUs."),
    recovery_steps: Optional[int] = typer.Option(None, help="Distillation steps after the last pruning step (default 30 % of --max-steps)."),
    qat_steps: Optional[int] = typer.Option(None, help="Quantization-aware fine-tuning steps (default 10 % of --max-steps; 0: PTQ only)."),
    no_quantize: bool = typer.Option(False, "--no-quantize", help="Skip INT8."),
    max_auc_drop: Optional[float] = typer.Option(None, help="Ship only candidates with test AUC >= teacher AUC - this (default: the target's, 0.01)."),
    max_sensitivity_drop: Optional[float] = typer.Option(None, help="...and test sensitivity >= teacher sensitivity - this (default: the target's, 0.02)."),
    max_dice_drop: Optional[float] = typer.Option(None, help="Segmentation: ship only candidates with test mean Dice >= teacher Dice - this (default: the target's, 0.01)."),
    max_robust_drop: Optional[float] = typer.Option(None, help="...and mean AUC drop under acquisition shift <= the teacher's + this, on val then test (default: the target's, off)."),
    search: bool = typer.Option(False, "--search", help="Choose the student, depth, channel ratio and precision by measurement: many short distillations, the best few in full, latency timed on the target's runtime, the fastest inside every budget ships."),
    search_budget: Optional[str] = typer.Option(None, help=f"Wall-clock budget of --search, e.g. 900s, 30m, 1h (default {DEFAULT_SEARCH_BUDGET}; implies --search). Run again to resume a stopped search."),
    search_lowrank: bool = typer.Option(False, "--search-lowrank", help="Add low-rank (truncated SVD) energies 0.9 and 0.75 to the search (measured not to win on CPU students, so off by default)."),
    search_trials: Optional[int] = typer.Option(None, min=1, help="At most this many configurations in --search (default: until the budget is spent)."),
    max_latency_ms: Optional[float] = typer.Option(None, help="--search: batch-1 p50 budget in ms (default: the target's latency_budget_ms)."),
    max_size_mb: Optional[float] = typer.Option(None, help="--search: budget for the deployable file in MiB (default: none)."),
    search_latency_from: Optional[Path] = typer.Option(None, help="--search on TensorRT targets: a report.json with device figures merged by `edgekd report --merge`; the search ranks by a latency model fitted on them (predicted, said in the report)."),
    operating_point: OperatingPoint = typer.Option(OperatingPoint.teacher_sensitivity, case_sensitive=False, help="Binary threshold chosen on val: teacher-sensitivity (hold the teacher's val sensitivity) or youden (each model's Youden's J)."),
    min_region: Optional[int] = typer.Option(None, min=0, help="Segmentation: a predicted region smaller than this many pixels becomes background, for each model whose val Dice it does not lower (default: half the 1st-percentile region area of the train masks; 0: keep every region)."),
    threads: Optional[int] = typer.Option(None, help="Threads for latency figures (default from the target)."),
    iterations: Optional[int] = typer.Option(None, help="Timed runs per latency figure, fixed (default: at least 200, more until the median is stable)."),
    max_samples: Optional[int] = opt.max_samples_option(),
    device: str = opt.device_option(),
    seed: int = opt.seed_option(),
    overwrite: bool = typer.Option(False, help="Replace an existing --out folder."),
    cache_dir: Optional[Path] = typer.Option(None, help="Where finished stages are kept and reused (default: .edgekd-cache beside --out)."),
    force: bool = typer.Option(False, "--force", help="Re-run every stage even when a finished one matches."),
    archive: bool = typer.Option(False, "--archive", help="Also write <out>/bundle.tar.gz (check it with `edgekd verify`)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the final table and errors."),
) -> None:
    """Distill, prune, quantize, lower and benchmark a student for a target; write report.json/md/html."""
    from .._compat import quiet_third_party
    from ..config import CompressConfig

    quiet_third_party()
    console = log_console()
    log = (lambda msg: None) if quiet else (lambda msg: console.print(msg, highlight=False))
    try:
        cfg = CompressConfig(target=target, out=out, teacher=teacher, teacher_weights=teacher_weights,
                             trust_checkpoint=trust_checkpoint, data=data, unlabelled=unlabelled, max_auc_drop=max_auc_drop,
                             max_sensitivity_drop=max_sensitivity_drop, max_dice_drop=max_dice_drop, task=task,
                             max_robust_drop=max_robust_drop, device=device,
                             seed=seed, overwrite=overwrite, max_samples=max_samples,
                             cache_dir=cache_dir, force=force, archive=archive)
        cfg.preprocessing = opt.preprocessing(image_size, mean, std)
        cfg.data_options = data_options(window, frame, split_by, split_fractions)
        _set(cfg.distill, student=student, student_weights=student_weights, max_steps=max_steps, batch_size=batch_size, temperature=temperature, alpha=alpha,
             augment=augment, mixup=mixup, teacher_mode=teacher_mode, feature_kd=feature_kd)
        cfg.distill.flips = allow_flips
        _set(cfg.prune, ratio=prune_ratio, steps=prune_steps, recovery_steps=recovery_steps, depth=prune_depth)
        _set(cfg.quant, qat_steps=qat_steps)
        cfg.quant.enabled = not no_quantize
        cfg.search = search_options(search, search_budget, search_lowrank, search_trials, max_latency_ms, max_size_mb,
                                    search_latency_from)
        _set(cfg.bench, threads=threads, iterations=iterations, max_iterations=iterations,
             operating_point=operating_point.value, min_region=min_region)
        from ..api import compress as run

        result = run(cfg, log=log)
    except EdgekdError as exc:
        from ..errors import NotShippedError

        if isinstance(exc, NotShippedError):
            _print_table(out)
        raise fail(exc)
    if not result.report:  # a torchrun process other than rank 0: it trained; rank 0 reports
        return
    _print_table(out)
    rep = result.report
    sp = rep["speedups"]
    console.print(f"[bold green]shipped {rep['shipped']}[/] — {rep['shipping']['reason']}", highlight=False)
    if "latency_vs_teacher-torch-fp32" in sp:
        console.print(f"  {sp['latency_vs_teacher-torch-fp32']:.1f}× faster than the torch fp32 teacher, "
                      f"{sp.get('latency_vs_teacher-openvino-int8', float('nan')):.1f}× faster than its OpenVINO INT8 PTQ; "
                      f"{sp.get('size_vs_teacher-onnxruntime-fp32', float('nan')):.1f}× smaller than its fp32 ONNX",
                      highlight=False)
    console.print(f"  report: {out / 'report.html'} and {out / 'report.md'}  ({rep['seconds']:.0f} s)", highlight=False)
    bundle = rep.get("bundle") or {}
    if bundle.get("path"):
        shipped_as = out / (bundle.get("archive") or bundle["path"])
        console.print(f"  bundle: {shipped_as}  (check it with: edgekd verify {shipped_as})", highlight=False)


def search_options(search: bool, budget: Optional[str], lowrank: bool, trials: Optional[int],
                   max_latency_ms: Optional[float], max_size_mb: Optional[float], latency_from: Optional[Path]):
    """The --search options as a SearchConfig; a search-only option without --search is one error line."""
    from ..config import SearchConfig

    on = search or budget is not None
    if not on:
        given = [name for name, v in (("--search-lowrank", lowrank or None), ("--search-trials", trials),
                                      ("--max-latency-ms", max_latency_ms), ("--max-size-mb", max_size_mb),
                                      ("--search-latency-from", latency_from)) if v is not None]
        if given:
            raise InputError(f"{', '.join(given)} {'is an option' if len(given) == 1 else 'are options'} of the "
                             "search: add --search (or --search-budget 30m)")
        return SearchConfig()
    budget = budget if budget is not None else DEFAULT_SEARCH_BUDGET  # checked with the other inputs (check_search)
    return SearchConfig(budget=budget, lowrank=lowrank, max_trials=trials, max_latency_ms=max_latency_ms,
                        max_size_mb=max_size_mb, latency_from=latency_from)


def data_options(window: Optional[str], frame: int, split_by: Optional[str], split_fractions: Optional[str]):
    """--window, --frame, --split-by and --split-fractions as a DataOptions (a bad value: one error line)."""
    from ..config import DataOptions
    from ..data.dicom import check_frame, check_window
    from ..data.splits import check_fractions

    opts = DataOptions(frame=check_frame(frame), split_by=split_by.strip() if split_by else None)
    if window is not None:
        if window.strip().lower() == "minmax":
            opts.window = "minmax"
        else:
            parts = window.split(",")
            try:
                opts.window = check_window(tuple(float(x) for x in parts) if len(parts) == 2 else window)
            except ValueError:
                raise InputError(f"--window '{window}' must be C,W (center and width, e.g. 40,400) or minmax") from None
    if split_fractions is not None:
        try:
            shares = tuple(float(x) for x in split_fractions.split(","))
        except ValueError:
            shares = split_fractions  # check_fractions names it and says what to pass
        opts.split_fractions = check_fractions(shares)
    return opts


def _set(obj, **values) -> None:
    for k, v in values.items():
        if v is not None:
            setattr(obj, k, v)


def _print_table(out: Path) -> None:
    import json

    from ..report.writer import rich_table

    path = out / "report.json"
    if path.exists():
        print_whole(rich_table(json.loads(path.read_text())))
