"""Import helpers: the torchvision CPU shim and lazy imports of optional backends."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

_TV_SHIM_DONE = False


def import_timm() -> ModuleType:
    """Import timm, working around a CUDA-only torchvision next to a CPU torch.

    PyPI's torchvision wheels are CUDA builds; with a CPU-only torch their compiled ops do not
    register and ``import torchvision`` fails on ``torchvision::nms``. Declaring the op schemas
    first lets the pure-Python parts (models, transforms) import; compiled ops stay unavailable,
    which timm's classifiers never call.
    """
    global _TV_SHIM_DONE
    try:
        import timm

        return timm
    except RuntimeError as exc:
        if "torchvision::" not in str(exc) or _TV_SHIM_DONE:
            raise
    import sys

    import torch

    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TV_SHIM_DONE = True
    globals()["_tv_lib"] = lib  # keep the fragment alive
    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith(("torchvision.", "timm"))]:
        del sys.modules[mod]
    import timm

    return timm


def import_smp() -> ModuleType:
    """Import segmentation_models_pytorch (smp); its encoders come from timm, so the shim goes first."""
    import_timm()
    return require("segmentation_models_pytorch", purpose="for segmentation students and smp: teachers")


def require(module: str, *, extra: str | None = None, purpose: str = "") -> ModuleType:
    """Import an optional backend or fail with one line saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f"pip install 'edgekd[{extra}]'" if extra else f"pip install {module}"
        why = f" (needed {purpose})" if purpose else ""
        raise MissingDependencyError(f"'{module}' is not installed{why}: {hint}. [{exc}]") from exc


def quiet_third_party() -> None:
    """Silence known-harmless library chatter in the CLI (tracer and deprecation warnings).

    Only the command line calls this; library users keep their own warning/logging settings.
    """
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=".*Converting a tensor to a Python.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from torch.jit import TracerWarning

        warnings.filterwarnings("ignore", category=TracerWarning)
    except ImportError:  # pragma: no cover
        pass
    class _WarningsAndUp(logging.Filter):  # survives libraries resetting their logger level on import
        def filter(self, record: logging.LogRecord) -> bool:
            return record.levelno >= logging.ERROR

    for name in ("torch.utils._pytree", "torch.onnx", "nncf", "torch._dynamo", "torchao"):
        logging.getLogger(name).addFilter(_WarningsAndUp())
