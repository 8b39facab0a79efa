"""TensorRT lowering for NVIDIA Jetson targets: a checked ONNX file, the build plan, the build.

A TensorRT engine is specific to the TensorRT version and the GPU it was built on, so edgekd
never ships one: it ships the ONNX file the engine is built from (fp32 for FP16/FP32 engines; an
INT8 Q/DQ file for INT8, see :mod:`edgekd.lower._trt_qdq`) and a ``build_engine.sh`` with the
exact ``trtexec`` command for the target's TensorRT release. :func:`build_engine` does the same
build through the TensorRT Python API, for devices that would rather not shell out.

trtexec flags by release (the help text in samples/common/sampleOptions.cpp of NVIDIA/TensorRT
8.2.1, 8.4.3, 8.5.3, 8.6.1, 9.3.0, 10.0.0, 10.3.0 and 11.0):

- workspace: ``--workspace=N`` (MiB) on 8.2; ``--memPoolSize=workspace:N`` (MiB, a bare number)
  on 8.4–9.x, where ``--workspace`` is deprecated; ``--memPoolSize=workspace:NM`` on 10.x and 11
  (unit suffixes from 10.0; ``--workspace`` is gone).
- precision: ``--fp16`` / ``--int8`` up to 10.x; 11 removed them (and ``--best``): networks are
  strongly typed, precision comes from the ONNX types and Q/DQ nodes, and ``--stronglyTyped`` is
  documented as the (default) mode.
- shapes: ``--shapes=input:1x1x64x64`` for one fixed shape, ``--minShapes/--optShapes/--maxShapes``
  for a batch range.
- DLA: ``--useDLACore=N`` and ``--allowGPUFallback`` in every release.

INT8 from a Q/DQ network needs ``--int8`` on TensorRT 8.x/10.x, plus ``--fp16`` so the layers
outside Q/DQ pairs may run in FP16 instead of FP32. DLA has no FP32 and no dynamic shapes (min =
opt = max), so DLA plans are FP16/INT8 with fixed shapes; layers DLA cannot run go to the GPU when
the profile allows GPU fallback. Not checked here: which Q/DQ layers a given DLA release runs
itself (the rest falls back), and that TensorRT 11.0–11.4.0 ship without DLA support on JetPack
(NVIDIA's 11.x DLA notes), so a profile with TensorRT >= 11 should say ``dla_cores: 0`` there.
"""
from __future__ import annotations

import os
import re
import shlex
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._io import write_text_atomic
from ..device.runner import (
    builder_flags,
    network_flags,
    trtexec_precision_args,
    trtexec_workspace_arg,
)
from ..errors import InputError, LoweringError, MissingDependencyError, TargetError
from ..targets import TargetProfile
from ._base import cleanup_on_error, first_line, temp_sibling
from ._trt_qdq import (  # noqa: F401  (re-exported: the public TensorRT API lives here)
    SUPPORTED_OPS,
    Inspection,
    check_tensorrt_onnx,
    check_tensorrt_qdq,
    export_opset,
    inspect_tensorrt_onnx,
    max_opset,
    parse_version,
    tensorrt_onnx_problems,
    tensorrt_qdq_problems,
    to_tensorrt_qdq,
)

PRECISIONS = ("fp16", "int8", "fp32")
DEFAULT_WORKSPACE_MB = 1024  # builder workspace when the profile sets none
SCRIPT_NAME = "build_engine.sh"
TRTEXEC_DIR = "/usr/src/tensorrt/bin"  # where JetPack installs trtexec (not on PATH by default)
_NAME = re.compile(r"[A-Za-z0-9_.\-/]+")
NOT_INSTALLED = ("TensorRT is not installed (it exists only on NVIDIA machines): build the engine on the device "
                 "with build_engine.sh, or pip install 'edgekd[tensorrt]' there")


@dataclass
class EnginePlan:
    """How to build one TensorRT engine on the device: what ``build_engine.sh`` and :func:`build_engine` do."""

    target: str  # target profile name, e.g. "jetson-xavier-nx"
    precision: str  # "fp16" | "int8" | "fp32": arithmetic the engine is built for
    onnx: str  # ONNX file name inside the bundle (fp32, or INT8 Q/DQ for int8)
    engine: str  # engine file name inside the bundle (written on the device)
    input_name: str  # the ONNX input tensor
    input_shape: tuple[int, ...]  # N×C×H×W the engine is optimized for (N: the opt batch)
    dla_core: int | None  # DLA core to build for; None: GPU only
    gpu_fallback: bool  # let layers DLA cannot run fall back to the GPU
    workspace_mb: int  # builder workspace limit, MiB
    tensorrt: str  # TensorRT major.minor on the device: the engine is built by and for it
    max_batch: int = 1  # largest batch the engine accepts (> input_shape[0]: dynamic batch profile)
    jetpack: str | None = None  # JetPack release on the device (for the script header)

    @property
    def needs_qdq_onnx(self) -> bool:
        """INT8 engines are built from an INT8 Q/DQ ONNX (explicit quantization); the others from fp32."""
        return self.precision == "int8"

    @property
    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes: batch 1, ``input_shape[0]`` and ``max_batch``."""
        chw = tuple(self.input_shape[1:])
        return (1, *chw), tuple(self.input_shape), (self.max_batch, *chw)

    @property
    def static(self) -> bool:
        low, opt, high = self.shapes
        return low == opt == high

    def trtexec_args(self) -> list[str]:
        """The exact trtexec command (argv) for this plan, with the flags of the plan's TensorRT release."""
        version = parse_version(self.tensorrt)
        args = ["trtexec", f"--onnx={self.onnx}", f"--saveEngine={self.engine}"]
        args += self._shape_args()
        args += trtexec_precision_args(version, self.precision)
        args.append(trtexec_workspace_arg(version, self.workspace_mb))
        if self.dla_core is not None:
            args.append(f"--useDLACore={self.dla_core}")
            if self.gpu_fallback:
                args.append("--allowGPUFallback")
        return args

    def command(self) -> str:
        """:meth:`trtexec_args` as one shell-quoted line."""
        return shlex.join(self.trtexec_args())

    def _shape_args(self) -> list[str]:
        def spec(shape: tuple[int, ...]) -> str:
            return f"{self.input_name}:{'x'.join(map(str, shape))}"

        low, opt, high = self.shapes
        if self.static:
            return [f"--shapes={spec(opt)}"]
        return [f"--minShapes={spec(low)}", f"--optShapes={spec(opt)}", f"--maxShapes={spec(high)}"]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["trtexec"] = self.trtexec_args()
        return d


def default_precision(profile: TargetProfile) -> str:
    """The profile's preferred precision that TensorRT builds (its list is in preference order)."""
    for precision in profile.precisions:
        if precision in PRECISIONS:
            return precision
    raise TargetError(f"target {profile.name} lists no precision TensorRT builds ({', '.join(PRECISIONS)})")


def plan_engine(profile: TargetProfile, onnx_name: str, precision: str, input_shape: tuple[int, ...],
                input_name: str = "input") -> EnginePlan:
    """The engine build for ``profile``: flags from its TensorRT version, DLA core, workspace and batch.

    ``onnx_name`` is the file name inside the bundle; the engine is the same stem with ``.engine``.
    ``input_shape`` is N×C×H×W (N = batch the engine is optimized for); the engine accepts batch 1
    to max(N, profile.batch). Raises TargetError for a non-TensorRT profile and InputError for a
    precision the device lacks, a bad file name or shape.
    """
    if profile.runtime != "tensorrt" or not profile.tensorrt:
        raise TargetError(f"target {profile.name} runs {profile.runtime}, not TensorRT: pick a jetson-* target")
    _check_precision(profile, precision)
    if Path(onnx_name).name != onnx_name or not onnx_name.endswith(".onnx") or onnx_name.startswith("."):
        raise InputError(f"onnx_name must be a plain .onnx file name inside the bundle, got {onnx_name!r}")
    if not _NAME.fullmatch(input_name):
        raise InputError(f"input name {input_name!r} has characters trtexec shape specs cannot carry; rename the input")
    shape = _check_shape(profile, input_shape)
    dla = 0 if profile.dla_cores > 0 and precision != "fp32" else None  # DLA has no FP32: GPU only
    plan = EnginePlan(
        target=profile.name, precision=precision, onnx=onnx_name, engine=f"{Path(onnx_name).stem}.engine",
        input_name=input_name, input_shape=shape, dla_core=dla, gpu_fallback=profile.gpu_fallback,
        workspace_mb=profile.workspace_mb or DEFAULT_WORKSPACE_MB, tensorrt=profile.tensorrt,
        max_batch=max(shape[0], profile.batch), jetpack=profile.jetpack,
    )
    if dla is not None and not plan.static:
        raise InputError(f"target {profile.name}: DLA needs fixed shapes (min = opt = max) but batch {shape[0]} to "
                         f"{plan.max_batch} was asked for; use batch 1 or set dla_cores: 0 in the profile")
    return plan


def _check_precision(profile: TargetProfile, precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"TensorRT builds {', '.join(PRECISIONS)} engines, not '{precision}'")
    if precision in profile.precisions:
        return
    maxwell = "maxwell" in str(profile.hardware.get("gpu", "")).lower() or profile.name == "jetson-nano"
    if precision == "int8" and maxwell:
        raise InputError(f"Jetson Nano (Maxwell) has no INT8: use fp16 (target {profile.name})")
    raise InputError(f"target {profile.name} does not run {precision}: use one of {', '.join(profile.precisions)}")


def _check_shape(profile: TargetProfile, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if len(shape) != 4 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise InputError(f"input_shape must be four positive integers N×C×H×W, got {input_shape!r}")
    size = profile.input_size
    if size is not None and shape[2:] != (size, size):
        raise InputError(f"target {profile.name} takes {size}×{size} inputs but the model input is "
                         f"{shape[2]}×{shape[3]}: resize the data (preprocessing) or change input_size")
    return shape


def export(model: Any, example: Any, path: Path, *, opset: int = 13) -> Path:
    """Uniform backend entry point: the ONNX file the device builds its engine from (pass the opset the
    device's parser reads: :func:`export_opset`); the engine itself is built on the device."""
    from .onnx import export_onnx

    return export_onnx(model, example, Path(path).with_suffix(".onnx"), opset=opset)


def open_runner(source: Path, *, threads: int, precision: str = "fp32") -> Any:
    """Uniform backend entry point. An engine runs only on the device that built it (the bundle's
    runner.py); on the host, the ONNX file it is built from runs in ONNX Runtime, for accuracy."""
    if Path(source).suffix != ".onnx":
        raise LoweringError(f"{source}: a TensorRT engine runs only on the device that built it; run the bundle's "
                            "runner.py there, or give the ONNX file it was built from")
    from .onnx import OnnxRuntimeRunner

    return OnnxRuntimeRunner(Path(source), threads, precision)


def prepare_bundle(bundle_dir: Path, profile: TargetProfile, onnx_name: str, precision: str,
                   input_shape: tuple[int, ...]) -> tuple[str, str]:
    """A bundle's device-side build: ``build_engine.sh`` for ``profile``; returns (engine file, the step to run)."""
    plan = plan_engine(profile, onnx_name, precision, input_shape)
    write_build_script(plan, bundle_dir)
    return plan.engine, (f"./build_engine.sh            # on the {profile.name}: builds {plan.engine} with trtexec "
                         f"(TensorRT {profile.tensorrt})")


def write_build_script(plan: EnginePlan, bundle_dir: Path) -> Path:
    """Write ``bundle_dir/build_engine.sh`` (executable): finds trtexec, then runs :meth:`EnginePlan.trtexec_args`."""
    bundle_dir = Path(bundle_dir)
    args = plan.trtexec_args()
    device = f"DLA core {plan.dla_core}" + (" with GPU fallback" if plan.gpu_fallback else " (no GPU fallback)") \
        if plan.dla_core is not None else "GPU"
    onnx_kind = "INT8 Q/DQ (explicit quantization)" if plan.needs_qdq_onnx else "fp32"
    lines = [
        "#!/usr/bin/env bash",
        f"# Build the TensorRT engine for target {plan.target} (written by edgekd).",
        f"# For: JetPack {plan.jetpack or 'unknown'}, TensorRT {plan.tensorrt}; {plan.precision.upper()} on {device}; "
        f"workspace {plan.workspace_mb} MiB.",
        f"# From: {plan.onnx} ({onnx_kind} ONNX) -> {plan.engine}.",
        "# Engines are not portable between TensorRT versions or devices: build on the device.",
    ]
    if parse_version(plan.tensorrt) >= (11, 0) and plan.precision == "fp16":
        lines.append("# TensorRT >= 11 builds strongly typed networks: the ONNX must itself be fp16 for FP16.")
    lines += [
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'TRTEXEC="${TRTEXEC:-$(command -v trtexec || true)}"',
        f'if [ -z "$TRTEXEC" ] && [ -x {TRTEXEC_DIR}/trtexec ]; then TRTEXEC={TRTEXEC_DIR}/trtexec; fi',
        'if [ -z "$TRTEXEC" ]; then',
        f'    echo "error: trtexec not found. JetPack installs it as {TRTEXEC_DIR}/trtexec (sudo apt-get install '
        f'nvidia-tensorrt, or nvidia-jetpack); or set TRTEXEC=/path/to/trtexec" >&2',
        "    exit 127",
        "fi",
        f"printf 'building %s with %s (for TensorRT {plan.tensorrt})\\n' {shlex.quote(plan.engine)} \"$TRTEXEC\" >&2",
        '"$TRTEXEC" ' + shlex.join(args[1:]),
        "",
    ]
    path = bundle_dir / SCRIPT_NAME
    write_text_atomic(path, "\n".join(lines))
    os.chmod(path, 0o755)
    return path


def build_engine(onnx_path: Path, engine_path: Path, plan: EnginePlan) -> Path:
    """Build ``plan``'s engine from ``onnx_path`` with the TensorRT Python API; write it to ``engine_path``.

    Version-aware, following the TensorRT 8.2, 8.5, 10.3 and 11.0 Python bindings: network flag
    EXPLICIT_BATCH on 8.x (deprecated and ignored on 10.x, removed on 11), STRONGLY_TYPED on 11;
    workspace via ``max_workspace_size`` before 8.4, ``set_memory_pool_limit`` after; FP16/INT8
    builder flags before 11 (removed in 11: types come from the ONNX); DLA core and GPU fallback;
    an optimization profile for dynamic inputs. Not executed against a real TensorRT here (no
    NVIDIA GPU in this workplace): the tests drive it with a stand-in module that records calls.
    """
    trt = _import_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise InputError(f"ONNX file '{onnx_path}' does not exist; export it first")
    version = parse_version(trt.__version__)
    if version != parse_version(plan.tensorrt):
        warnings.warn(f"the plan is for TensorRT {plan.tensorrt} but TensorRT {trt.__version__} is installed: "
                      f"the engine will only load with {trt.__version__}", stacklevel=2)
    if version >= (11, 0) and plan.precision == "fp16":
        _require_fp16_onnx(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, version))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(min(parser.num_errors, 3))]
        raise LoweringError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {'; '.join(errors) or 'no detail'}"
                            f"; check it with edgekd.lower.tensorrt.check_tensorrt_onnx(path, '{plan.tensorrt}')")
    config = builder.create_builder_config()
    _set_workspace(trt, config, version, plan.workspace_mb)
    _set_precision(trt, builder, config, version, plan.precision)
    if plan.dla_core is not None:
        _use_dla(trt, builder, config, plan)
    _add_profile(builder, network, config, plan)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise LoweringError(f"TensorRT {trt.__version__} failed to build {plan.precision} engine from {onnx_path} "
                            f"(its log above says why); try a larger workspace_mb or another precision")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(engine_path, ".engine")
    with cleanup_on_error(tmp):
        with open(tmp, "wb") as f:
            f.write(serialized)
        os.replace(tmp, engine_path)
    return engine_path


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise MissingDependencyError(NOT_INSTALLED) from exc
    return tensorrt


def _parser_error(err: Any) -> str:
    desc = err.desc() if hasattr(err, "desc") else str(err)
    node = err.node() if hasattr(err, "node") else -1
    return f"node {node}: {desc}" if isinstance(node, int) and node >= 0 else str(desc)


def _set_workspace(trt: Any, config: Any, version: tuple[int, int], mb: int) -> None:
    if version < (8, 4):
        config.max_workspace_size = mb << 20
    else:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, mb << 20)


def _set_precision(trt: Any, builder: Any, config: Any, version: tuple[int, int], precision: str) -> None:
    flags = builder_flags(version, precision)  # the runner's table: none on 11 (the ONNX types decide)
    if "INT8" in flags and getattr(builder, "platform_has_fast_int8", True) is False:
        raise LoweringError("this GPU has no fast INT8 (e.g. Jetson Nano's Maxwell): build an fp16 engine")
    for flag in flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))


def _use_dla(trt: Any, builder: Any, config: Any, plan: EnginePlan) -> None:
    cores = builder.num_DLA_cores
    if plan.dla_core >= cores:
        raise LoweringError(f"the plan uses DLA core {plan.dla_core} but this device has {cores} DLA core(s): "
                            f"build on a {plan.target} or use a target profile with dla_cores: {cores}")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = plan.dla_core
    if plan.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _add_profile(builder: Any, network: Any, config: Any, plan: EnginePlan) -> None:
    """One optimization profile (batch 1 .. max_batch) for the input when its shape is dynamic."""
    if network.num_inputs != 1:
        raise LoweringError(f"the ONNX model has {network.num_inputs} inputs; edgekd classifiers have one")
    tensor = network.get_input(0)
    shape = tuple(tensor.shape)
    if tensor.name != plan.input_name:
        raise LoweringError(f"the ONNX input is '{tensor.name}' but the plan says '{plan.input_name}': re-plan with "
                            f"input_name='{tensor.name}'")
    if len(shape) != 4 or any(d not in (-1, want) for d, want in zip(shape[1:], plan.input_shape[1:])):
        raise LoweringError(f"the ONNX input shape {shape} does not match the plan's {plan.input_shape}")
    if all(d >= 0 for d in shape):
        return  # static: nothing to choose
    low, opt, high = plan.shapes
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, low, opt, high)
    config.add_optimization_profile(profile)


def _require_fp16_onnx(path: Path) -> None:
    """TensorRT >= 11 is strongly typed: an fp32 ONNX builds an FP32 engine, whatever was asked."""
    from ._trt_qdq import load_model

    try:
        model = load_model(path)
    except InputError as exc:
        raise LoweringError(first_line(exc)) from exc
    fp16 = 10  # onnx.TensorProto.FLOAT16
    typed = [v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.value_info, *model.graph.output)]
    if fp16 not in typed and all(init.data_type != fp16 for init in model.graph.initializer):
        raise LoweringError(f"TensorRT >= 11 builds strongly typed networks, so {path} (fp32) would give an FP32 "
                            f"engine: convert it to fp16 first (python -m modelopt.onnx.autocast "
                            f"--low_precision_type fp16 --onnx_path {path.name})")
