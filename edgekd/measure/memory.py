"""Peak memory of one runtime session, measured in a fresh child process.

Measuring inside the pipeline's own process would be meaningless: it has trained models and
holds freed heap that a new session silently reuses. So each ONNX Runtime / OpenVINO file is
loaded in a new Python process that imports only numpy and the runtime (through the same
standalone runner the device bundle ships, :mod:`edgekd.device.runner`, with the same thread
count and precision settings), and the child reports:

* ``baseline_mb`` — resident memory after importing the runtime, before the model is loaded;
* ``peak_mb`` — the process's resident high-water mark (``VmHWM``) after loading the model,
  compiling it and running ``iterations`` inferences: what a device process running this model
  needs at most, Python interpreter included;
* ``session_mb`` = ``peak_mb − baseline_mb`` — what the session itself adds (weights, compiled
  kernels, activations, runtime scratch).

On Linux the high-water mark is reset (``/proc/self/clear_refs``) just before the model is
loaded, so import-time spikes are not counted. Elsewhere ``ru_maxrss`` is used and the method
says so. Torch modules run inside the pipeline's process and are not measured.

    python -m edgekd.measure.memory --runtime openvino --model m.xml --shape 1,1,64,64 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

MEASURED_RUNTIMES = ("onnxruntime", "openvino")


@dataclass
class SessionMemory:
    peak_mb: float  # resident high-water mark of the child process (interpreter + runtime + session)
    session_mb: float  # peak minus the resident memory just before the model was loaded
    baseline_mb: float  # resident memory with numpy and the runtime imported, no model
    batch: int  # images per inference while measuring
    iterations: int  # inferences run
    method: str  # how the peak was read

    def to_dict(self) -> dict:
        return asdict(self)


def measure_session_memory(runtime: str, model: Path, shape: tuple[int, ...], threads: int, *,
                           iterations: int = 20, timeout_s: float = 300.0) -> SessionMemory:
    """Run the child process for one model file; raises RuntimeError with its last error line on failure."""
    if runtime not in MEASURED_RUNTIMES:
        raise ValueError(f"memory is measured for {', '.join(MEASURED_RUNTIMES)} sessions, not {runtime}")
    cmd = [sys.executable, "-m", "edgekd.measure.memory", "--runtime", runtime, "--model", str(model),
           "--shape", ",".join(str(d) for d in shape), "--threads", str(threads), "--iterations", str(iterations)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the edgekd that runs this is the one the child imports
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        raise RuntimeError(lines[-1] if lines else f"memory child exited with code {proc.returncode}")
    return SessionMemory(**json.loads(proc.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- the child


def _status_mb(key: str) -> float | None:
    """A ``/proc/self/status`` field (VmRSS, VmHWM) in MiB, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the resident high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def child_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="peak memory of one runtime session (run by edgekd)")
    ap.add_argument("--runtime", choices=MEASURED_RUNTIMES, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--shape", required=True, help="N,C,H,W")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--iterations", type=int, default=20)
    args = ap.parse_args(argv)
    import numpy as np

    from edgekd.device import runner as device

    device.import_runtime(args.runtime)
    shape = tuple(int(d) for d in args.shape.split(","))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    reset = _reset_peak()
    baseline = _status_mb("VmRSS") if reset else _maxrss_mb()
    model = device.open_model(args.runtime, args.model, shape[0], shape[1:], args.threads)
    for _ in range(args.iterations):
        model(x)
    peak = _status_mb("VmHWM") if reset else _maxrss_mb()
    method = ("VmHWM after resetting it at model load (Linux clear_refs), child process" if reset
              else "ru_maxrss of the child process (includes import-time peaks)")
    print(json.dumps({"peak_mb": peak, "session_mb": max(peak - baseline, 0.0), "baseline_mb": baseline,
                      "batch": shape[0], "iterations": args.iterations, "method": method}))
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
