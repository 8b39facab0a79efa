"""Latency of one runner on one input: warm-up, timed calls until the median is stable, percentiles.

The method (also written in benchmarks/README.md, "Latency method"):

* the runner's thread count is fixed and must equal ``threads``; a runner with a ``pinned()``
  context (TorchRunner) holds it for the whole measurement;
* ``warmup`` untimed calls, then at least ``iterations`` timed calls, each timed on its own with
  ``time.perf_counter`` (the progress bar advances between calls, outside the timed span), the
  garbage collector paused as ``timeit`` does;
* adaptive when ``max_iterations > iterations``: timing goes on until the 95 % confidence
  interval of the median (order statistics, no distribution assumed) is within ``±rel_ci`` of
  the median, or ``max_iterations`` calls, or ``max_seconds`` of timing, whichever comes first;
  the reason it stopped and the interval reached are recorded;
* p50 / p90 / p99 / mean of the timed calls, and throughput = batch / mean call time.
"""
from __future__ import annotations

import contextlib
import gc
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np

from .._progress import track
from ..errors import InputError

Z95 = 1.959964  # two-sided 95 % normal quantile


@dataclass
class Latency:
    p50: float  # median milliseconds per call
    p90: float  # milliseconds
    p99: float  # milliseconds
    mean: float  # milliseconds
    throughput: float  # images/s at this batch: batch / mean call time
    batch: int  # images per call
    iterations: int  # timed calls
    warmup: int  # untimed calls before them
    threads: int  # threads the runtime used
    ci95_rel: float = math.nan  # half-width of the 95 % CI of the median, relative to the median
    stop: str = "fixed"  # why timing stopped: fixed (exactly `iterations`), stable, max_iterations, time_cap
    seconds: float = 0.0  # wall time spent in timed calls

    def to_dict(self) -> dict:
        return asdict(self)

    def report_dict(self) -> dict:
        """The ``latency_ms`` entry of report.json (NaN and infinity become null: strict JSON)."""
        d = self.to_dict()
        d["throughput_ips"] = d.pop("throughput")
        d["ci95_rel"] = self.ci95_rel if math.isfinite(self.ci95_rel) else None
        return d


def latency_report(batch1: Latency | None, at_batch: Latency | None = None) -> dict | None:
    """``latency_ms`` of a candidate: the batch-1 figures, plus ``at_batch`` (the profile's batch) or null."""
    if batch1 is None:
        return None
    d = batch1.report_dict()
    d["at_batch"] = at_batch.report_dict() if at_batch is not None else None
    return d


def median_ci95(samples: np.ndarray) -> tuple[float, float]:
    """Distribution-free 95 % confidence interval of the median: two order statistics of the sample."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = len(x)
    if n == 0:
        raise InputError("median_ci95 needs at least one sample")
    half = Z95 * math.sqrt(n) / 2
    lo = max(int(math.floor(n / 2 - half)), 1)  # 1-based ranks
    hi = min(int(math.ceil(n / 2 + half)) + 1, n)
    return float(x[lo - 1]), float(x[hi - 1])


def relative_ci(samples: np.ndarray) -> float:
    """Half-width of :func:`median_ci95` divided by the median."""
    lo, hi = median_ci95(samples)
    med = float(np.median(samples))
    return (hi - lo) / (2 * med) if med > 0 else math.inf


def measure_latency(runner: Any, example: np.ndarray, *, warmup: int = 20, iterations: int = 200,
                    threads: int, max_iterations: int | None = None, rel_ci: float = 0.01,
                    max_seconds: float = 3.0, desc: str = "latency") -> Latency:
    """Time ``runner(example)``: ``warmup`` untimed calls, then at least ``iterations`` timed ones.

    With ``max_iterations`` above ``iterations`` the timing is adaptive (see the module text);
    otherwise exactly ``iterations`` calls are timed.
    """
    x = _check_inputs(runner, example, warmup, iterations, threads)
    cap = max(iterations, max_iterations or iterations)
    if rel_ci <= 0 or max_seconds <= 0:
        raise InputError(f"adaptive latency needs rel_ci > 0 and max_seconds > 0, got {rel_ci} and {max_seconds}")
    times = np.empty(cap, dtype=np.float64)
    n, stop, next_check = 0, "fixed" if cap == iterations else "max_iterations", iterations
    with _pinned(runner), _gc_paused():
        with contextlib.closing(track(range(warmup), f"{desc} warm-up", total=warmup)) as warm:
            for _ in warm:
                runner(x)
        with contextlib.closing(track(range(cap), desc, total=cap)) as timed:
            for n in timed:
                start = time.perf_counter()
                runner(x)
                times[n] = time.perf_counter() - start
                if n + 1 < next_check or cap == iterations:
                    continue
                stop = _stop_reason(times[:n + 1], rel_ci, max_seconds)
                if stop:
                    break
                stop = "max_iterations"
                next_check = n + 1 + max(50, (n + 1) // 4)
    return summarize(times[:n + 1], batch=int(x.shape[0]), warmup=warmup, threads=threads, stop=stop)


def _stop_reason(times: np.ndarray, rel_ci: float, max_seconds: float) -> str:
    if relative_ci(times) <= rel_ci:
        return "stable"
    if float(times.sum()) >= max_seconds:
        return "time_cap"
    return ""


def summarize(seconds: np.ndarray, *, batch: int, warmup: int, threads: int, stop: str = "fixed") -> Latency:
    """Percentiles, mean, throughput and the median's relative 95 % CI of per-call times in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    mean = float(ms.mean())
    return Latency(p50, p90, p99, mean, batch * 1e3 / mean if mean > 0 else float("inf"), batch, len(ms),
                   warmup, threads, relative_ci(ms), stop, float(ms.sum() / 1e3))


def _check_inputs(runner: Any, example: np.ndarray, warmup: int, iterations: int, threads: int) -> np.ndarray:
    if iterations < 1 or warmup < 0:
        raise InputError(f"latency needs iterations >= 1 and warmup >= 0, got {iterations} and {warmup}")
    if threads < 1:
        raise InputError(f"threads must be a positive integer, got {threads}")
    own = getattr(runner, "threads", None)
    if own is not None and own != threads:
        raise InputError(f"the runner was built with {own} threads but latency was asked for {threads}; "
                         f"build the runner with threads={threads}")
    x = np.ascontiguousarray(example, dtype=np.float32)
    if x.ndim != 4 or x.shape[0] < 1:
        raise InputError(f"latency needs an N×C×H×W example with N >= 1, got shape {tuple(x.shape)}")
    return x


def time_candidate(cand: Any, images: np.ndarray, cfg: Any, threads: int, batch: int = 1) -> None:
    """Set ``cand.latency`` (batch 1), ``cand.latency_batch`` (``batch`` when > 1) and ``cand.memory``.

    ``cfg`` is an :class:`edgekd.config.BenchConfig`; ``images`` are preprocessed test images
    (the first one, or the first ``batch``, is the timed input).
    """
    kw = dict(warmup=cfg.warmup, iterations=cfg.iterations, threads=threads, max_iterations=cfg.max_iterations,
              rel_ci=cfg.rel_ci, max_seconds=cfg.max_seconds)
    cand.latency = measure_latency(cand.runner, images[:1], desc=f"latency {cand.name}", **kw)
    if batch > 1:
        cand.latency_batch = measure_latency(cand.runner, batch_of(images, batch),
                                             desc=f"latency {cand.name} batch {batch}", **kw)
    if cfg.memory:
        cand.memory = session_memory(cand, tuple(images.shape[1:]), threads)


def session_memory(cand: Any, chw: tuple[int, ...], threads: int) -> Any:
    """Peak memory of the candidate's runtime session (child process), or None with a note why not."""
    from .memory import MEASURED_RUNTIMES, measure_session_memory

    path = getattr(cand, "path", None)
    if cand.backend not in MEASURED_RUNTIMES or path is None:
        return None
    try:
        return measure_session_memory(cand.backend, path, (1, *chw), threads)
    except Exception as exc:  # a measurement, never a reason to stop the pipeline
        cand.notes.append(f"peak memory not measured: {str(exc)[:200]}")
        return None


def batch_of(images: np.ndarray, batch: int) -> np.ndarray:
    """``batch`` images from ``images`` (repeated when there are fewer): the input of a batch-N figure."""
    if batch < 1:
        raise InputError(f"latency batch must be >= 1, got {batch}")
    reps = -(-batch // len(images))
    return np.concatenate([images] * reps, axis=0)[:batch] if reps > 1 else images[:batch]


@contextlib.contextmanager
def _pinned(runner: Any) -> Iterator[None]:
    pinned = getattr(runner, "pinned", None)
    if pinned is None:
        yield
    else:
        with pinned():
            yield


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
