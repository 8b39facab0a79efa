"""The on-device side of a bundle: the standalone runner and the JSON it writes.

:mod:`edgekd.device.runner` is copied verbatim into every device bundle as ``runner.py``; it
needs only numpy and the device runtime and runs on Python 3.6 (JetPack 4.6), so it imports
nothing from edgekd. This package gives the host side two things: :func:`copy_runner` for the
bundle writer and :func:`load_device_result` for ``edgekd report --merge device.json``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import InputError
from .runner import RUNNER_VERSION

RUNNER_PATH = Path(__file__).resolve().with_name("runner.py")
REQUIRED_KEYS = ("runner_version", "measured_on", "device", "runtime", "model", "batch", "latency_ms",
                 "throughput_ips", "iterations", "warmup", "sample", "metrics")
LATENCY_KEYS = ("p50", "p90", "p99", "mean")

__all__ = ["RUNNER_PATH", "RUNNER_VERSION", "copy_runner", "load_device_result"]


def copy_runner(bundle_dir: Path) -> Path:
    """Copy the runner into ``bundle_dir`` as ``runner.py`` (executable) and return its path."""
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    dest = bundle_dir / "runner.py"
    shutil.copyfile(RUNNER_PATH, dest)
    dest.chmod(0o755)
    return dest


def load_device_result(path: Path) -> dict:
    """Read a ``device.json`` written by the runner, checking it is one (InputError if not)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"device result {path} not found: copy device.json back from the device (see docs/jetson.md)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not readable JSON ({exc}): copy the runner's --out file again") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path} holds a JSON {type(data).__name__}, not the runner's result object")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise InputError(f"{path} lacks {', '.join(missing)}: it was not written by edgekd's runner.py --out")
    if data["measured_on"] != "device":
        raise InputError(f"{path} has measured_on={data['measured_on']!r}; expected 'device' (runner.py output)")
    latency = data["latency_ms"]
    if not isinstance(latency, dict) or any(not isinstance(latency.get(k), (int, float)) for k in LATENCY_KEYS):
        raise InputError(f"{path}: latency_ms must hold numbers for {', '.join(LATENCY_KEYS)}")
    return data
