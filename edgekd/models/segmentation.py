"""Segmentation models: the student zoo (small U-Nets on light timm encoders) and smp teachers.

Both come from segmentation_models_pytorch (smp), which takes any timm backbone as its encoder
(``tu-<timm name>``), so the segmentation zoo reuses the classification one instead of
re-declaring it. A model maps N×C×H×W images to N×K×H×W logits (K classes, background 0).

Image size: smp 0.6's U-Net upsamples each decoder stage to the exact size of its skip
connection, so the students (and U-Net teachers) take **any** H×W and return logits of the same
H×W (checked on odd sizes such as 65×64 and 7×9); multiples of :data:`SEG_STRIDE` (32) keep every
×2 upsampling exact and are what to prefer. Other smp architectures (FPN, DeepLabV3+, ...) need
multiples of their encoder's output stride: :func:`check_seg_size` says so in one line for the
model it is given, and edgekd does **not** pad inside the model (padding would have to be mirrored
on the masks and cropped from the logits in every exported graph; the data loaders resize to
``--image-size`` instead).

Students are built from scratch (``encoder_weights=None``: nothing is downloaded). Teachers are
``smp:<Arch>:<encoder>`` (e.g. ``smp:Unet:resnet34``) plus a weights file (state_dict
``.pt``/``.pth`` or ``.safetensors``, loaded with ``weights_only=True``), like ``timm:`` teachers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .._compat import import_smp, import_timm
from .._io import sha256_file
from ..errors import InputError, TeacherError, did_you_mean
from ._checkpoint import first_line, mismatch_summary, read_state_dict
from .teacher import Teacher

__all__ = [
    "DEFAULT_SEG_STUDENT",
    "SEG_STRIDE",
    "SEG_STUDENTS",
    "SegStudentSpec",
    "check_seg_size",
    "check_seg_teacher",
    "create_seg_student",
    "create_seg_teacher",
    "load_seg_teacher",
    "parse_seg_teacher_spec",
]

SEG_STRIDE = 32  # output stride of a 5-stage encoder: sizes that are multiples of it upsample exactly
SEG_PREFIX = "smp:"  # teacher specs: smp:<Arch>:<encoder>
GENERIC_DECODER = (64, 32, 16, 16, 8)  # decoder channels of a "unet-<any timm name>" student


@dataclass(frozen=True)
class SegStudentSpec:
    """One student of the zoo: an smp architecture on a timm encoder with a narrow decoder."""

    arch: str  # smp architecture class name ("Unet")
    encoder: str  # smp encoder name; "tu-<timm name>" for timm encoders
    decoder_channels: tuple[int, ...]  # deepest stage first; multiples of 8 (pruning keeps multiples of 8)
    note: str  # one line: size at 128×128 (1 channel, 2 classes) and what it is for


# Measured at 128×128, 1 channel, 2 classes (Torch-Pruning's counter); U-Net ResNet-34 (smp
# default decoder 256..16): 1937 M MACs, 24.4 M params. Every student is >= 10× cheaper.
SEG_STUDENTS: dict[str, SegStudentSpec] = {
    "unet-mobilenetv3_small_050": SegStudentSpec(
        "Unet", "tu-mobilenetv3_small_050", (64, 32, 16, 16, 8),
        "97 M MACs, 0.54 M params (20× under U-Net ResNet-34); for tight CPU budgets, easy masks"),
    "unet-lcnet_050": SegStudentSpec(
        "Unet", "tu-lcnet_050", (64, 32, 16, 16, 8),
        "114 M MACs, 0.60 M params (17×); plain depthwise stack, fast on ARM CPUs"),
    "unet-mobilenetv3_small_100": SegStudentSpec(
        "Unet", "tu-mobilenetv3_small_100", (64, 32, 16, 16, 8),
        "121 M MACs, 1.38 M params (16×)"),
    "unet-lcnet_100": SegStudentSpec(
        "Unet", "tu-lcnet_100", (32, 16, 16, 8, 8),
        "124 M MACs, 1.29 M params (16×); wider encoder, narrower decoder"),
    "unet-mobilenetv3_large_075": SegStudentSpec(
        "Unet", "tu-mobilenetv3_large_075", (64, 32, 16, 16, 8),
        "163 M MACs, 2.35 M params (12×); more accuracy, still mobile-sized"),
    "unet-efficientnet_b0": SegStudentSpec(
        "Unet", "tu-efficientnet_b0", (32, 16, 16, 8, 8),
        "171 M MACs, 3.75 M params (11×); strongest in the zoo: the default (pruned after distillation)"),
}
# The default: measured on the synthetic ultrasound set at 128×128 (800 train images, 1200 steps of
# CE + Dice on the masks alone, seed 0), val Dice: unet-mobilenetv3_small_050 0.657,
# unet-mobilenetv3_large_075 0.729, unet-efficientnet_b0 0.800 (its U-Net ResNet-34 teacher: 0.778).
# A student that cannot fit the masks cannot be distilled to within 0.01 Dice of its teacher, and
# pruning then takes its MACs back down (benchmarks/segmentation.py).
DEFAULT_SEG_STUDENT = "unet-efficientnet_b0"


def check_seg_size(model: torch.nn.Module, height: int, width: int) -> None:
    """Fail with the nearest valid sizes when ``model`` cannot take H×W images.

    smp models say whether they need H and W divisible by their encoder's output stride
    (``requires_divisible_input_shape``; U-Net does not); any other model is not checked here.
    """
    for v in (height, width):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InputError(f"image size must be two positive integers, got {height}×{width}")
    if not getattr(model, "requires_divisible_input_shape", False):
        return
    stride = int(getattr(getattr(model, "encoder", None), "output_stride", SEG_STRIDE))
    for v in (height, width):
        if v % stride:
            lo = v // stride * stride
            fix = f"{lo} or {lo + stride}" if lo else str(stride)
            raise InputError(f"{type(model).__name__} needs H and W that are multiples of its encoder's output stride "
                             f"{stride}, got {height}×{width}: resize to {fix} (--image-size), or use a Unet")


def _check_io(in_chans: int, num_classes: int, error: type[InputError]) -> None:
    for what, v, low in (("input channels", in_chans, 1), ("classes", num_classes, 2)):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise error(f"a segmentation model needs >= {low} {what}, got {v!r} (background counts as a class)")


def _build(arch: str, encoder: str, in_chans: int, num_classes: int, error: type[InputError],
           **kwargs) -> torch.nn.Module:
    smp = import_smp()
    try:
        return smp.create_model(arch, encoder_name=encoder, encoder_weights=None, in_channels=in_chans,
                                classes=num_classes, **kwargs)
    except Exception as exc:  # noqa: BLE001 - smp/timm raise ValueError, KeyError, RuntimeError...
        raise error(f"smp cannot build {arch} on encoder {encoder} with {in_chans} channels and {num_classes} "
                    f"classes ({type(exc).__name__}: {first_line(exc, 160)}); choose another encoder") from None


def _student_spec(name: str) -> SegStudentSpec:
    if name in SEG_STUDENTS:
        return SEG_STUDENTS[name]
    timm = import_timm()
    encoder = name[len("unet-"):] if name.startswith("unet-") else ""
    if encoder and timm.is_model(encoder):
        return SegStudentSpec("Unet", f"tu-{encoder}", GENERIC_DECODER, "any timm encoder")
    hint = did_you_mean(name, SEG_STUDENTS) or did_you_mean(name, [f"unet-{m}" for m in timm.list_models()])
    raise InputError(f"unknown segmentation student '{name}'{hint}: choose one of {', '.join(SEG_STUDENTS)} "
                     "(or unet-<name> for a name from timm.list_models())")


def create_seg_student(name: str, in_chans: int, num_classes: int, *, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised student (seeded, no pretrained weights) in train mode.

    ``name`` is a key of :data:`SEG_STUDENTS`, or ``unet-<timm name>`` for a U-Net with the
    decoder :data:`GENERIC_DECODER` on any timm encoder that smp accepts.
    """
    spec = _student_spec(str(name))
    _check_io(in_chans, num_classes, InputError)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = _build(spec.arch, spec.encoder, in_chans, num_classes, InputError,
                       decoder_channels=spec.decoder_channels)
    finally:
        torch.random.set_rng_state(state)  # seeding the student must not change the caller's stream
    return model.train()


def _canonical_arch(arch: str) -> str:
    smp = import_smp()
    names = {a.__name__.lower(): a.__name__ for a in smp._MODEL_ARCHITECTURES}
    if arch.lower() not in names:
        raise TeacherError(f"unknown smp architecture '{arch}'{did_you_mean(arch, names.values())}: use one of "
                           f"{', '.join(names.values())}")
    return names[arch.lower()]


def _check_encoder(encoder: str) -> None:
    smp = import_smp()
    if encoder.startswith("tu-"):
        timm = import_timm()
        if not timm.is_model(encoder[3:]):
            raise TeacherError(f"unknown timm encoder '{encoder[3:]}'{did_you_mean(encoder[3:], timm.list_models())}"
                               " for smp (tu-<name>): see timm.list_models()")
        return
    names = smp.encoders.get_encoder_names()
    if encoder not in names:
        raise TeacherError(f"unknown smp encoder '{encoder}'{did_you_mean(encoder, names)}: use a name from "
                           "smp.encoders.get_encoder_names(), or tu-<timm name>")


def create_seg_teacher(arch: str, encoder: str, in_chans: int, num_classes: int) -> torch.nn.Module:
    """The architecture of an smp teacher (``smp.create_model`` with its default decoder), untrained.

    ``arch`` is an smp architecture (``Unet``, ``FPN``, ``DeepLabV3Plus``..., any case);
    ``encoder`` an smp encoder name (``resnet34``) or ``tu-<timm name>``. Load the trained
    weights with :func:`load_seg_teacher`.
    """
    arch = _canonical_arch(str(arch))
    _check_encoder(str(encoder))
    _check_io(in_chans, num_classes, TeacherError)
    return _build(arch, str(encoder), in_chans, num_classes, TeacherError)


def parse_seg_teacher_spec(spec: str) -> tuple[str, str]:
    """``smp:<Arch>:<encoder>`` -> (arch, encoder), or a one-line TeacherError."""
    parts = str(spec).split(":")
    if not str(spec).startswith(SEG_PREFIX) or len(parts) != 3 or not parts[1].strip() or not parts[2].strip():
        raise TeacherError(f"segmentation teacher spec '{spec}' is not smp:<Arch>:<encoder>: "
                           "write e.g. smp:Unet:resnet34")
    return parts[1].strip(), parts[2].strip()


def load_seg_teacher(spec: str, weights: Path | None, *, in_chans: int, num_classes: int,
                     trust_checkpoint: bool = False) -> Teacher:
    """``smp:<Arch>:<encoder>`` with its weights file, as an eval-mode :class:`Teacher` (format "smp").

    The teacher's ``logits`` then give N×K×H×W; :func:`check_seg_teacher` checks it against the data.
    """
    arch, encoder = parse_seg_teacher_spec(spec)
    model = create_seg_teacher(arch, encoder, in_chans, num_classes)
    if weights is None:
        raise TeacherError(f"--teacher {spec} needs --teacher-weights FILE (a state_dict .pt/.pth or .safetensors); "
                           "edgekd never downloads pretrained weights")
    path = Path(weights).expanduser()
    state = read_state_dict(path, trust_checkpoint=trust_checkpoint)
    _match_state(model, state, spec, path, in_chans, num_classes)
    model.load_state_dict(state, strict=True)
    return Teacher("smp", path, str(spec), sha256_file(path), model.eval())


def _match_state(model: torch.nn.Module, state: dict[str, torch.Tensor], spec: str, path: Path,
                 in_chans: int, num_classes: int) -> None:
    """One line naming the likely cause and a few bad keys when ``state`` does not fit ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return
    causes = []
    head = "segmentation_head.0.weight"
    if head in shapes:
        causes.append(f"its segmentation head has {state[head].shape[0]} classes but the data has {num_classes}")
    first = next((k for k, v in own.items() if v.ndim == 4), None)  # the first convolution
    if first in shapes and state[first].ndim == 4 and state[first].shape[1] != own[first].shape[1]:
        causes.append(f"{first.rsplit('.', 1)[0]} expects {state[first].shape[1]} input channels but the data "
                      f"has {in_chans}")
    if not causes:
        causes.append(f"the weights were probably saved from another architecture or encoder than {spec}")
    raise TeacherError(f"weights {path.name} do not fit {spec}: {'; '.join(causes)} "
                       f"[{mismatch_summary(missing, unexpected, shapes, state, own)}]")


def check_seg_teacher(teacher: Teacher, channels: int, num_classes: int, image_size: tuple[int, int]) -> None:
    """Fail early, with the fix, when a segmentation teacher does not fit the data (size, channels, classes)."""
    h, w = int(image_size[0]), int(image_size[1])
    if teacher.module is not None:
        check_seg_size(teacher.module, h, w)
    try:
        out = teacher.logits(torch.zeros(2, channels, h, w))
    except Exception as exc:  # noqa: BLE001 - any backend failure becomes one actionable line
        raise TeacherError(f"teacher {teacher.spec} failed on a 2×{channels}×{h}×{w} input ({type(exc).__name__}: "
                           f"{first_line(exc, 160)}); check that it takes {channels}-channel images") from None
    if out.ndim != 4 or out.shape[0] != 2 or tuple(out.shape[2:]) != (h, w):
        raise TeacherError(f"teacher {teacher.spec} is not a segmentation model: output {tuple(out.shape)} for "
                           f"2×{channels}×{h}×{w} images, expected 2×classes×{h}×{w} logits")
    if out.shape[1] != num_classes:
        raise TeacherError(f"teacher {teacher.spec} gives {out.shape[1]} classes per pixel but the masks have "
                           f"{num_classes}: use a teacher trained on these classes")
    if not torch.isfinite(out).all():
        raise TeacherError(f"teacher {teacher.spec} gives NaN/Inf logits on an all-zero image: its weights are broken")
