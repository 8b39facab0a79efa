"""What machine and runtimes a set of figures was measured on.

The instruction-set flags decide which precisions a CPU runtime can run fast (INT8 needs VNNI
or AMX-INT8 to pay off; OpenVINO runs "fp32" in bf16 on AVX-512 BF16 / AMX CPUs unless told
otherwise), so they are read from ``/proc/cpuinfo`` and reported with every figure. The load
average at measurement time is recorded too: on a shared machine it explains noisy latency.
"""
from __future__ import annotations

import os
import platform
from importlib import metadata

# /proc/cpuinfo flag -> the name reports use (x86 "flags", Arm "Features"), in report order
ISA_FLAGS = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512F",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "avx512_fp16": "AVX-512 FP16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
    "asimd": "NEON",
    "asimddp": "NEON dot product",
    "i8mm": "Arm I8MM",
    "bf16": "Arm BF16",
    "sve": "SVE",
}
_PACKAGES = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "torch-pruning", "timm", "tensorrt", "numpy")


def parse_cpuinfo(text: str, fallback_model: str = "") -> tuple[str, list[str]]:
    """CPU model name and the ISA names of :data:`ISA_FLAGS` present in a ``/proc/cpuinfo`` text."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model or fallback_model, [name for flag, name in ISA_FLAGS.items() if flag in flags]


def _cpuinfo() -> tuple[str, list[str]]:
    fallback = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpuinfo(f.read(), fallback)
    except OSError:
        return fallback, []


def runtime_versions() -> dict[str, str]:
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info(threads: int) -> dict:
    model, isa = _cpuinfo()
    return {
        "cpu": model,
        "isa": isa,
        "logical_cores": os.cpu_count(),
        "threads": threads,
        "loadavg": _loadavg(),  # 1, 5 and 15 min when the report was written
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "python": platform.python_version(),
        "runtimes": runtime_versions(),
    }


def machine_summary(info: dict) -> str:
    """One line for tables: ``Intel(R) Xeon(R) (AVX2, AVX-512 VNNI, AMX), 2 threads``."""
    isa = ", ".join(i for i in info.get("isa", []) if i in ("AVX2", "AVX-512 VNNI", "AVX-VNNI", "AVX-512 BF16", "AMX",
                                                             "NEON", "NEON dot product", "Arm BF16"))
    return f"{info.get('cpu', '?')} ({isa or 'no SIMD flags read'}), {info.get('threads', '?')} threads"
