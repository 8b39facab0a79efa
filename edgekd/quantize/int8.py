"""INT8 with NNCF: post-training quantization, quantization-aware fine-tuning, export preparation.

NNCF 3.4 quantizes a torch model by inserting hooks (fake-quantize ops with trainable scales),
so the quantized model is still an ``nn.Module`` that trains like any other (QAT reuses the
distillation loop). The PERFORMANCE preset makes every quantizer symmetric: zero points are 0
in the exported QDQ ONNX, as TensorRT requires. Weights are int8 per channel; activations NNCF
knows are non-negative (after ReLU) become uint8 with zero point 0, the others int8.
"""
from __future__ import annotations

import copy

import torch
import torch.fx

from ..config import DistillConfig, QuantConfig
from ..data._base import Dataset, Split
from ..distill.schedule import check_steps
from ..distill.source import TeacherSignal
from ..distill.trainer import DistillResult, distill
from ..errors import InputError, LoweringError


class _Wrapper(torch.nn.Module):
    """A plain module around the model NNCF quantizes.

    NNCF adds a hook-storage submodule to the model, which ``nn.Sequential`` would call as a layer,
    and it sends a ``torch.fx.GraphModule`` (a student converted from an ONNX teacher by
    onnx2torch) to its experimental FX backend, which fails on such graphs; wrapped, both go
    through NNCF's torch backend like any student.
    """

    def __init__(self, inner: torch.nn.Sequential) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def check_quant_config(cfg: QuantConfig) -> None:
    """QAT steps, learning rate and calibration size the INT8 stage can use (InputError, one line)."""
    check_steps(cfg.qat_steps, "QAT steps", allow_zero=True)
    if not isinstance(cfg.qat_lr, (int, float)) or not cfg.qat_lr > 0:
        raise InputError(f"QAT learning rate must be > 0, got {cfg.qat_lr!r}: try 1e-4")
    n = cfg.calibration_samples
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InputError(f"calibration samples must be an integer >= 1, got {n!r}: try 300")


def calibration_subset(split: Split, n: int, seed: int) -> torch.Tensor:
    """A seeded random subset of at most ``n`` images of ``split`` (N×C×H×W), for PTQ calibration."""
    if not isinstance(n, int) or n < 1:
        raise InputError(f"calibration samples must be an integer >= 1, got {n!r}: try 300")
    if len(split) == 0:
        raise InputError("cannot calibrate INT8 on an empty split: give a dataset with training images")
    images = split.subset(n, seed).images
    return images if isinstance(images, torch.Tensor) else images[:]  # a train split read from disk: its rows


def quantize_ptq(
    model: torch.nn.Module, calibration: torch.Tensor, *, subset_size: int | None = None
) -> torch.nn.Module:
    """Post-training INT8 quantization of a copy of ``model`` (the fp32 model is left untouched).

    ``calibration`` is N×C×H×W preprocessed images, fed one at a time (batch 1 gives NNCF's
    range statistics per sample, as it expects); ``subset_size`` caps how many are used (all
    of them by default). Returns NNCF's quantized torch model in eval mode.
    """
    import nncf

    if not isinstance(calibration, torch.Tensor) or calibration.ndim != 4 or len(calibration) == 0:
        shape = tuple(calibration.shape) if isinstance(calibration, torch.Tensor) else type(calibration).__name__
        raise InputError(f"calibration data must be a non-empty N×C×H×W tensor, got {shape}")
    if subset_size is not None and (not isinstance(subset_size, int) or subset_size < 1):
        raise InputError(f"calibration subset size must be an integer >= 1, got {subset_size!r}")
    n = len(calibration) if subset_size is None else min(subset_size, len(calibration))
    from ._nncf_ext import prepare_nncf

    prepare_nncf(lambda msg: None)  # the pipeline already did (and logged); direct callers get the same timeout
    fp32 = copy.deepcopy(model).eval()
    if isinstance(fp32, (torch.nn.Sequential, torch.fx.GraphModule)):
        fp32 = _Wrapper(fp32).eval()
    samples = list(calibration[:n].float().split(1))
    quantized = nncf.quantize(
        fp32, nncf.Dataset(samples), preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=n
    )
    return quantized.eval()


def quantize_qat(
    qmodel: torch.nn.Module,
    data: Dataset,
    teacher_logits: TeacherSignal,
    cfg: QuantConfig,
    distill_cfg: DistillConfig,
    *,
    steps: int,
    seed: int = 0,
) -> DistillResult:
    """Quantization-aware fine-tuning: distillation on the quantized model (weights and scales).

    ``steps`` optimizer steps at ``cfg.qat_lr`` with the distillation config's loss, batches and
    selection; the PTQ starting point counts as a candidate, so QAT never returns a model further
    from the teacher on val than PTQ. ``steps == 0`` only measures the PTQ model.
    """
    check_quant_config(cfg)
    return distill(qmodel, data, teacher_logits, distill_cfg, steps=steps, lr=cfg.qat_lr,
                   seed=seed, desc="qat", keep_start=True)


def strip_for_export(qmodel: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """A copy of an NNCF-quantized model with its fake-quantizers turned into native torch ops.

    ``torch.onnx.export(stripped, example, dynamo=False, opset_version>=13)`` then writes
    standard QuantizeLinear/DequantizeLinear pairs that ONNX Runtime and TensorRT read, instead
    of NNCF's custom FakeQuantize nodes (the dynamo exporter fails on NNCF models).
    """
    import nncf

    shared = _shared_quantizers(qmodel)
    stripped = nncf.strip(qmodel, do_copy=True, strip_format=nncf.StripFormat.NATIVE, example_input=example)
    if shared:
        _strip_shared_quantizers(stripped, shared)
    return stripped.eval()


def _shared_quantizers(qmodel: torch.nn.Module) -> list[list[str]]:
    """Hook names that share one quantizer object, in groups (NNCF unifies the scales of a concat's inputs).

    ``nncf.strip(..., NATIVE)`` walks the hooks without duplicates, so it converts a shared quantizer
    under its first name only and the others stay NNCF ``FakeQuantize`` nodes in the ONNX file (seen on
    U-Net skip concatenations); classifiers without a concat have no shared quantizer.
    """
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import BaseQuantizer

    groups: dict[int, list[str]] = {}
    for name, module in get_hook_storage(qmodel).named_hooks(remove_duplicate=False):
        if isinstance(module, BaseQuantizer):
            groups.setdefault(id(module), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _strip_shared_quantizers(stripped: torch.nn.Module, shared: list[list[str]]) -> None:
    """Point every name of a shared quantizer at the native quantizer that ``nncf.strip`` made for one of them."""
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import BaseQuantizer

    storage = get_hook_storage(stripped)
    for names in shared:
        modules = [storage.get_submodule(n) for n in names]
        native = [m for m in modules if not isinstance(m, BaseQuantizer)]
        if not native:  # pragma: no cover - nncf converts at least the first name
            raise LoweringError(f"nncf.strip left the shared quantizer {names[0]} unconverted: "
                                "export the model without INT8, or report this model as a bug")
        for name, module in zip(names, modules):
            if isinstance(module, BaseQuantizer):
                storage.set_submodule(name, native[0])
