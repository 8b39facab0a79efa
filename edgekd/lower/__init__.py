"""Lowering: one module per runtime, each imported only when asked for.

Every backend module offers a runner (see :class:`edgekd.lower._base.Runner`) and
``open_runner(source, *, threads, precision)``; the exporters live next to their runner
(:func:`edgekd.lower.onnx.export_onnx`, :func:`edgekd.lower.openvino.export_openvino`).
Numeric checks of an exported model against its torch source are in
:mod:`edgekd.lower.validate`.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingDependencyError, TargetError, did_you_mean

RUNTIMES = ("torch", "onnxruntime", "openvino", "tensorrt")

_MODULES = {
    "torch": "edgekd.lower.torch",
    "onnxruntime": "edgekd.lower.onnx",
    "openvino": "edgekd.lower.openvino",
    "tensorrt": "edgekd.lower.tensorrt",
}


def get_backend(name: str) -> ModuleType:
    """The module that lowers to and runs on runtime ``name`` (one of :data:`RUNTIMES`)."""
    if name not in _MODULES:
        raise TargetError(
            f"unknown runtime '{name}'{did_you_mean(name, RUNTIMES)}; choose one of {', '.join(RUNTIMES)}"
        )
    module = _MODULES[name]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise MissingDependencyError(
                f"the '{name}' runtime needs the Python package '{exc.name}', which is not installed: "
                f"pip install {exc.name} (or pick another runtime)"
            ) from exc
        raise MissingDependencyError(
            f"the '{name}' runtime is not available in this edgekd install ({module} is missing); "
            f"pick another runtime or install an edgekd build that ships it"
        ) from exc
