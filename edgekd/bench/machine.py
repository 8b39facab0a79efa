"""What machine and runtimes a set of figures was measured on."""
from __future__ import annotations

import os
import platform
from importlib import metadata

_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512F",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_tile": "AMX",
    "asimd": "NEON",
}
_PACKAGES = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "torch-pruning", "timm", "tensorrt")


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = value.split()
    except OSError:
        pass
    return model, [name for flag, name in _FLAGS.items() if flag in flags]


def runtime_versions() -> dict[str, str]:
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine_info(threads: int) -> dict:
    model, isa = _cpuinfo()
    return {
        "cpu": model,
        "isa": isa,
        "logical_cores": os.cpu_count(),
        "threads": threads,
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "python": platform.python_version(),
        "runtimes": runtime_versions(),
    }
