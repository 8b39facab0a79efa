"""Lowering: one module per runtime, each imported only when asked for, and one table of what each is.

:data:`BACKENDS` says, per runtime, what the rest of edgekd needs to know without importing it:
the files its model is made of in a bundle, which runtime re-runs that file on a host
(``edgekd verify``), the runtime name the device runner takes, and whether its engines are built
(and timed) on the device only. Code outside ``lower/`` reads this table instead of testing
runtime names.

Every backend module offers a runner (see :class:`edgekd.lower._base.Runner`) and
``open_runner(source, *, threads, precision)``; the exporters live next to their runner
(:func:`edgekd.lower.onnx.export_onnx`, :func:`edgekd.lower.openvino.export_openvino`,
:func:`edgekd.lower.tensorrt.prepare_bundle`). Numeric checks of an exported model against its
torch source are in :mod:`edgekd.lower.validate`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..errors import MissingDependencyError, TargetError, did_you_mean

DEFAULT_OPSET = 17  # ONNX opset of exported students, unless the target's parser reads less


@dataclass(frozen=True)
class Backend:
    """What one runtime is, for the code outside ``lower/``."""

    name: str  # the runtime, as target profiles and candidates name it
    module: str  # the module that exports to and runs on it (imported when asked for)
    bundle_files: tuple[tuple[str, str], ...] = ()  # (name in a bundle, suffix of the lowered file); first = model
    host_runtime: str | None = None  # the runtime that re-runs the bundle's model on a host (verify)
    device_runtime: str | None = None  # the runtime the device runner is asked for
    device_built: bool = False  # engines are built and timed on the device only (host: accuracy of the source file)

    @property
    def bundle_model(self) -> str:
        return self.bundle_files[0][0]

    def files_for_bundle(self, path: Path) -> dict[str, Path]:
        """Bundle name → source file of a lowered model at ``path``."""
        return {name: Path(path).with_suffix(suffix) for name, suffix in self.bundle_files}


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", "edgekd.lower.torch"),
    Backend("onnxruntime", "edgekd.lower.onnx", (("model.onnx", ".onnx"),), "onnxruntime", "onnxruntime"),
    Backend("openvino", "edgekd.lower.openvino", (("model.xml", ".xml"), ("model.bin", ".bin")), "openvino",
            "openvino"),
    Backend("tensorrt", "edgekd.lower.tensorrt", (("model.onnx", ".onnx"),), "onnxruntime", "tensorrt",
            device_built=True),
)}
RUNTIMES = tuple(BACKENDS)


def backend_info(name: str) -> Backend:
    """The table entry of runtime ``name`` (TargetError with a suggestion when unknown)."""
    if name not in BACKENDS:
        raise TargetError(
            f"unknown runtime '{name}'{did_you_mean(name, RUNTIMES)}; choose one of {', '.join(RUNTIMES)}"
        )
    return BACKENDS[name]


def export_opset(profile) -> int:
    """The ONNX opset students are exported at for a target profile: what its parser reads."""
    if backend_info(profile.runtime).device_built:
        return get_backend(profile.runtime).export_opset(profile.tensorrt)
    return DEFAULT_OPSET


def get_backend(name: str) -> ModuleType:
    """The module that lowers to and runs on runtime ``name`` (one of :data:`RUNTIMES`)."""
    module = backend_info(name).module
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
