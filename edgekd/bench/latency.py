"""Latency of one runner on one input: warm-up, then timed calls, then percentiles.

Each call is timed on its own with ``time.perf_counter`` (the progress bar advances between
calls, outside the timed span) and the garbage collector is paused while timing, as
``timeit`` does. A runner that carries a thread count must match ``threads``; a runner with
a ``pinned()`` context (TorchRunner) holds its thread count for the whole measurement.
"""
from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np

from .._progress import track
from ..errors import InputError


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

    def to_dict(self) -> dict:
        return asdict(self)


def measure_latency(runner: Any, example: np.ndarray, *, warmup: int = 20, iterations: int = 200,
                    threads: int, desc: str = "latency") -> Latency:
    """Time ``runner(example)``: ``warmup`` untimed calls, then ``iterations`` timed ones."""
    x = _check_inputs(runner, example, warmup, iterations, threads)
    times = np.empty(iterations, dtype=np.float64)
    with _pinned(runner), _gc_paused():
        for _ in track(range(warmup), f"{desc} warm-up", total=warmup):
            runner(x)
        for i in track(range(iterations), desc, total=iterations):
            start = time.perf_counter()
            runner(x)
            times[i] = time.perf_counter() - start
    ms = times * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    mean = float(ms.mean())
    batch = int(x.shape[0])
    return Latency(p50, p90, p99, mean, batch * 1e3 / mean if mean > 0 else float("inf"),
                   batch, iterations, warmup, threads)


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
