"""Students derived from the teacher: its own architecture and weights, shrunk, then distilled.

``--student from-teacher`` (:data:`FROM_TEACHER`) starts the student from what the teacher already
knows instead of from random weights: a deep copy of the teacher's torch module, with whole
shape-preserving blocks removed (:mod:`edgekd.prune.depth`, least harmful first by KL to the
teacher on val) and then channels removed with Torch-Pruning until its MACs reach a budget
(:func:`edgekd.prune.pruner._prune_to`: channel ratio searched, counts multiples of 8). The
distill stage then trains it like any student. The teacher is never modified.

How the teacher becomes a prunable torch module depends on its format:

==============  ==========================================================================
format          route
==============  ==========================================================================
timm, pickle    ``copy.deepcopy(teacher.module)``; depth and channel pruning
onnx            onnx2torch ``GraphModule`` of the file; channel pruning only (a flat graph
                has no blocks to remove)
torchscript     exported to ONNX (legacy exporter), then as ONNX
torch.export    exported to ONNX (dynamo exporter), then as ONNX
==============  ==========================================================================

A converted student quantizes with NNCF like a timm one (:mod:`edgekd.models.onnx_torch` keeps its
onnx2torch layers on their torch path, and :func:`edgekd.quantize.quantize_ptq` hands NNCF a plain
module around the ``GraphModule``).

Saving needs no pickle: :func:`save_derived` writes the pruned structure as JSON relative to
:func:`derived_base` (the teacher's architecture, rebuilt from the teacher) and a state_dict;
:func:`load_derived` rebuilds it from the same teacher.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import EdgekdError, TeacherError
from ..models.stats import count_macs, count_params
from ..models.teacher import Teacher

FROM_TEACHER = "from-teacher"  # DistillConfig.student value that asks for a derived student
REFERENCE_STUDENT = "lcnet_100"  # the default MACs budget is this zoo student's MACs on the same input
_GRAPH_FORMATS = ("onnx", "torchscript", "torch.export")
_MAX_SCORE_IMAGES = 512  # val images used to rank blocks for removal
MAX_FRACTION_OF_TEACHER = 0.5  # a default derived start must get below this share of the teacher's MACs
_PROBE_RATIOS = (0.5, 0.75)  # channel ratios tried to see how small the teacher's network can get
_STEM = "student"


@dataclass
class DerivedStudent:
    """A student cut from the teacher, in train mode, and what was done to get it."""

    model: torch.nn.Module
    record: dict[str, Any] = field(default_factory=dict)  # JSON-ready: see derive_student


def check_derivable(teacher: Teacher) -> None:
    """Fail at once (before any stage runs) when no student can be derived from ``teacher``'s format."""
    if teacher.format in ("timm", "pickle") and teacher.module is not None:
        return
    if teacher.format in _GRAPH_FORMATS:
        return
    raise TeacherError(f"--student {FROM_TEACHER} does not support {teacher.format} teachers: pass --teacher "
                       "timm:<arch> --teacher-weights W, or a zoo student (--student lcnet_100)")


def derived_base(teacher: Teacher, example: torch.Tensor) -> torch.nn.Module:
    """A fresh, unpruned, train-mode torch module of the teacher's architecture and weights.

    The same teacher always gives the same module (names, shapes, weights): it is the base that
    :func:`save_derived` records the pruned structure against. ``example`` (1×C×H×W) is needed
    to export TorchScript and torch.export teachers to ONNX.
    """
    check_derivable(teacher)
    if teacher.format in ("timm", "pickle"):
        return copy.deepcopy(teacher.module).train()
    from ..models.onnx_torch import onnx_to_torch, torch_to_onnx

    try:
        if teacher.format == "onnx":
            import onnx

            proto = onnx.load(str(teacher.onnx_path or teacher.path))
        elif teacher.format == "torchscript":
            proto = torch_to_onnx(teacher.module, example, exported=False)
        else:  # the program itself: Teacher keeps only its (unprunable) GraphModule
            proto = _exported_program_onnx(teacher, example)
        module = onnx_to_torch(proto)
        _check_runs(module, example, teacher)
    except EdgekdError:
        raise
    except Exception as exc:  # noqa: BLE001 - converters raise anything; the user needs one line
        raise TeacherError(_unconvertible(teacher, exc)) from None
    return module


def trial_base(teacher: Teacher, example: torch.Tensor, reference: str = REFERENCE_STUDENT) -> torch.nn.Module:
    """:func:`derived_base`, and proof that Torch-Pruning can cut it to about the MACs of zoo student ``reference``.

    The default start is checked before any stage runs: two channel trials show how small the
    teacher's network can get. A graph that onnx2torch or Torch-Pruning cannot handle, or one
    that cannot be cut below :data:`MAX_FRACTION_OF_TEACHER` of the teacher's own MACs, raises
    TeacherError in one line, and the caller falls back to the zoo student at once instead of
    distilling a student barely smaller than the teacher. (A cut that cannot reach the budget
    itself is still taken: derive_student gets as close as it can and says so.)
    """
    from ..distill.objective import CLASSIFICATION
    from .pruner import _prune_copy

    example = example[:1].detach().float()
    base = derived_base(teacher, example)
    macs = reference_macs(example, _num_classes(base, example), reference)
    name = CLASSIFICATION.head_name(base)
    try:
        # two channel trials (MACs are not monotone in the ratio near the top: rounding to multiples
        # of 8 makes Torch-Pruning leave a layer whole rather than cut it to nothing)
        smallest = min(_prune_copy(base, example, r, name, "magnitude", None).macs for r in _PROBE_RATIOS)
    except Exception as exc:  # noqa: BLE001 - Torch-Pruning's tracer on an unusual graph
        raise TeacherError(f"Torch-Pruning cannot prune teacher {teacher.spec} ({type(exc).__name__}: "
                           f"{_first_line(exc)})") from None
    full = count_macs(base, example)
    if smallest > MAX_FRACTION_OF_TEACHER * full:
        raise TeacherError(f"the teacher's network cannot be cut below {smallest / 1e6:.1f} M MACs per image, "
                           f"{smallest / full:.0%} of its {full / 1e6:.1f} M (the budget, {reference}'s, is "
                           f"{macs / 1e6:.1f} M)")
    return base


def derive_student(
    teacher: Teacher,
    *,
    example: torch.Tensor,
    val_images: torch.Tensor,
    val_teacher_logits: torch.Tensor,
    train_images: torch.Tensor | None = None,
    macs: int | None = None,
    depth: int | None = None,
    temperature: float = 4.0,
    base: torch.nn.Module | None = None,
) -> DerivedStudent:
    """Cut a student from ``teacher``: remove blocks, then channels until its MACs are at most ``macs``.

    ``macs``: the budget for one 1×C×H×W forward pass; None: the MACs of :data:`REFERENCE_STUDENT`
    on ``example`` (the zoo's CPU default, so the derived student costs the same). ``depth``:
    blocks to remove; None: all but one block of each stage that can lose blocks (only blocks whose
    output has their input's shape can go). Blocks are ranked by the KL divergence at
    ``temperature`` between the teacher's val logits and the student's on ``val_images``.
    BatchNorm statistics are re-estimated on ``train_images`` (up to 512) after each cut: the
    teacher's no longer describe what reaches a layer once blocks or channels before it are gone.
    ``base``: :func:`derived_base` of the teacher when the caller already has it (it is not modified).
    """
    from ..distill.objective import CLASSIFICATION
    from .pruner import ROUND_TO, _prune_to

    example = example[:1].detach().float()
    base = _base(teacher, example, base)
    macs0, params0 = count_macs(base, example), count_params(base)
    if macs is None:
        macs = reference_macs(example, _num_classes(base, example))
    if not isinstance(macs, int) or macs <= 0:
        raise EdgekdError(f"derived student MACs budget must be a positive integer, got {macs!r}")
    n = min(len(val_images), _MAX_SCORE_IMAGES)
    calib = (val_images if train_images is None else train_images)[:_MAX_SCORE_IMAGES]
    model, removed, scores = _remove_blocks(base, val_images[:n], val_teacher_logits[:n], depth, temperature, calib)
    classifier_name = CLASSIFICATION.head_name(model)
    try:
        trial = _prune_to(model, example, macs, classifier_name, "magnitude", None)
    except Exception as exc:  # noqa: BLE001 - Torch-Pruning's tracer on an unusual graph
        raise TeacherError(f"Torch-Pruning cannot prune teacher {teacher.spec} ({type(exc).__name__}: "
                           f"{_first_line(exc)}): pass --teacher timm:<arch> --teacher-weights W, or a zoo "
                           "student (--student lcnet_100)") from None
    model = trial.model
    _recalibrate_bn(model, calib)
    _check_runs(model, example, teacher)
    model.train()
    record = {
        "student": FROM_TEACHER,
        "teacher_format": teacher.format,
        "architecture": _architecture(teacher, model),
        "route": "module copy" if teacher.format in ("timm", "pickle") else "onnx2torch",
        "removed_blocks": removed,
        "kd_scores": [round(s, 6) for s in scores],
        "macs_teacher": macs0,
        "params_teacher": params0,
        "macs_target": macs,
        "macs": trial.macs,
        "macs_target_reached": trial.reached,  # False: cut as far as the layers allow (their last channels)
        "params": count_params(model),
        "channel_ratio": round(trial.ratio, 4),
        "round_to": ROUND_TO,
        "bn_recalibrated_on": int(len(calib)) if _has_bn(model) else 0,
    }
    return DerivedStudent(model, record)


def reference_macs(example: torch.Tensor, num_classes: int, name: str = REFERENCE_STUDENT) -> int:
    """MACs of zoo student ``name`` (``in_chans`` from ``example``) on ``example``."""
    from ..models.student import create_student

    return count_macs(create_student(name, int(example.shape[1]), num_classes), example[:1])


def save_derived(model: torch.nn.Module, teacher: Teacher, folder: Path, example: torch.Tensor,
                 base: torch.nn.Module | None = None) -> None:
    """``student.structure.json`` + ``student.pt`` (state_dict) in ``folder``, relative to :func:`derived_base`
    (``base``, when the caller already has it)."""
    from .serialize import save_pruned

    save_pruned(model, _base(teacher, example, base), Path(folder), stem=_STEM)


def load_derived(teacher: Teacher, folder: Path, example: torch.Tensor,
                 base: torch.nn.Module | None = None) -> torch.nn.Module:
    """The student saved by :func:`save_derived`, rebuilt from the same teacher (eval mode)."""
    from .serialize import load_pruned

    return load_pruned(lambda: _base(teacher, example, base), Path(folder), stem=_STEM)


def _base(teacher: Teacher, example: torch.Tensor, base: torch.nn.Module | None) -> torch.nn.Module:
    """A fresh copy of the caller's derived base, or one rebuilt from the teacher (a conversion for graph formats)."""
    return copy.deepcopy(base) if base is not None else derived_base(teacher, example[:1])


# ---------------------------------------------------------------------------- helpers
def _remove_blocks(model: torch.nn.Module, images: torch.Tensor, teacher_logits: torch.Tensor, depth: int | None,
                   temperature: float, calib: torch.Tensor) -> tuple[torch.nn.Module, list[str], list[float]]:
    """Greedy removal, least harmful first; every stage (``nn.Sequential``) keeps at least one block."""
    from .depth import remove_blocks

    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 0):
        raise EdgekdError(f"derived student depth (blocks to remove) must be an integer >= 0, got {depth!r}")
    limit = _default_depth(model, images[:1]) if depth is None else depth
    slim, step = remove_blocks(model, limit, images, teacher_logits, temperature, allowed=_stage_keeps_one,
                               refit=lambda m: _recalibrate_bn(m, calib))
    return slim, list(step.removed), list(step.scores)


_BN = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)


def _has_bn(model: torch.nn.Module) -> bool:
    return any(isinstance(m, _BN) for m in model.modules())


def _recalibrate_bn(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> None:
    """Re-estimate every BatchNorm's running mean/var on ``images`` (cumulative average); weights untouched."""
    norms = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not norms or len(images) < 2:
        return
    saved = [m.momentum for m in norms]
    was = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    model.train()
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size]
                if len(batch) > 1:
                    model(batch)
    finally:
        for m, mom in zip(norms, saved):
            m.momentum = mom
        model.train(was)


def _default_depth(model: torch.nn.Module, example: torch.Tensor) -> int:
    """All removable blocks but one per stage: for ResNet-18, 4 of its 8 blocks (one per stage)."""
    from .depth import removable_blocks

    per_stage: dict[str, int] = {}
    for name in removable_blocks(model, example):
        parent = name.rpartition(".")[0]
        per_stage[parent] = per_stage.get(parent, 0) + 1
    total = 0
    for parent, k in per_stage.items():
        blocks = len(model.get_submodule(parent)) if parent else 0
        total += min(k, max(0, blocks - 1))
    return total


def _stage_keeps_one(model: torch.nn.Module, name: str) -> bool:
    parent = name.rpartition(".")[0]
    stage = model.get_submodule(parent) if parent else model
    return sum(1 for m in stage.children() if not isinstance(m, torch.nn.Identity)) > 1


def _num_classes(model: torch.nn.Module, example: torch.Tensor) -> int:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(example)
    model.train(was)
    return int(out.shape[1])


def _check_runs(model: torch.nn.Module, example: torch.Tensor, teacher: Teacher) -> None:
    """The student must take any batch size and give N×classes logits."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(example.repeat(3, 1, 1, 1))
    except Exception as exc:  # noqa: BLE001
        raise TeacherError(f"the student derived from teacher {teacher.spec} does not run on a batch of 3 "
                           f"({type(exc).__name__}: {_first_line(exc)}): export the teacher with a dynamic batch, or "
                           "pass --teacher timm:<arch> --teacher-weights W") from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 3:
        raise TeacherError(f"the student derived from teacher {teacher.spec} gives {getattr(out, 'shape', type(out))} "
                           "for 3 images, expected 3×classes logits")


def _architecture(teacher: Teacher, model: torch.nn.Module) -> str:
    if teacher.format == "timm":
        return teacher.spec.split(":", 1)[1].strip()
    return f"{type(model).__name__} from {teacher.format} {Path(teacher.spec).name}"


def _exported_program_onnx(teacher: Teacher, example: torch.Tensor) -> Any:
    import io as _io
    import logging

    from ..models.onnx_torch import torch_to_onnx

    path = teacher.path
    log = logging.getLogger("torch.export")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        source: Any = str(path) if path.suffix == ".pt2" else _io.BytesIO(path.read_bytes())
        program = torch.export.load(source)
    finally:
        log.setLevel(level)
    return torch_to_onnx(program, example, exported=True)


def _unconvertible(teacher: Teacher, exc: BaseException) -> str:
    return (f"cannot derive a student from {teacher.format} teacher {teacher.spec}: converting it to a prunable torch "
            f"module failed ({type(exc).__name__}: {_first_line(exc)}); pass --teacher timm:<arch> --teacher-weights W, "
            "or a zoo student (--student lcnet_100)")


def _first_line(exc: BaseException, limit: int = 160) -> str:
    from ..models._checkpoint import first_line

    return first_line(exc, limit)
