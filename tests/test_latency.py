"""Latency measurement: honest percentiles, the iterations asked for, the threads asked for."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from edgekd.bench.latency import Latency, measure_latency
from edgekd.errors import InputError
from edgekd.lower.torch import TorchRunner

X = np.zeros((1, 1, 8, 8), np.float32)


class Counting:
    """A runner that counts its calls and returns fixed logits."""

    backend, precision, path = "fake", "fp32", None

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.zeros((len(x), 2), np.float32)


class Sleeping(Counting):
    def __call__(self, x: np.ndarray) -> np.ndarray:
        time.sleep(0.002)
        return super().__call__(x)


def test_percentiles_are_ordered_and_iterations_honored():
    runner = Counting()
    lat = measure_latency(runner, X, warmup=7, iterations=53, threads=1)
    assert isinstance(lat, Latency)
    assert runner.calls == 7 + 53
    assert (lat.iterations, lat.warmup, lat.batch, lat.threads) == (53, 7, 1, 1)
    assert 0 < lat.p50 <= lat.p90 <= lat.p99
    assert set(lat.to_dict()) == {"p50", "p90", "p99", "mean", "throughput", "batch", "iterations", "warmup", "threads"}


def test_a_runner_that_sleeps_2_ms_measures_about_2_ms():
    lat = measure_latency(Sleeping(), np.zeros((4, 1, 8, 8), np.float32), warmup=2, iterations=30, threads=1)
    assert 1.95 <= lat.p50 <= 4.0, lat
    assert lat.mean >= 1.95
    assert lat.throughput == pytest.approx(4 * 1000 / lat.mean)


def test_torch_runner_threads_hold_during_the_whole_timing():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return x.flatten(1)[:, :2]

    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    lat = measure_latency(TorchRunner(Probe(), threads=target), X, warmup=3, iterations=10, threads=target)
    assert seen == [target] * 13 and lat.threads == target
    assert torch.get_num_threads() == before


def test_threads_must_match_the_runner():
    runner = TorchRunner(torch.nn.Flatten(), threads=1)
    with pytest.raises(InputError, match="threads=3"):
        measure_latency(runner, X, threads=3)


@pytest.mark.parametrize("kwargs", [dict(iterations=0), dict(warmup=-1), dict(threads=0)])
def test_bad_settings_are_input_errors(kwargs):
    args = dict(warmup=1, iterations=5, threads=1) | kwargs
    with pytest.raises(InputError):
        measure_latency(Counting(), X, **args)


def test_example_must_be_a_batch():
    with pytest.raises(InputError, match="N×C×H×W"):
        measure_latency(Counting(), np.zeros((8, 8), np.float32), threads=1)


def test_onnxruntime_runner_latency_is_finite(tmp_path):
    from edgekd.lower.onnx import OnnxRuntimeRunner, export_onnx

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    runner = OnnxRuntimeRunner(export_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx"), threads=1)
    lat = measure_latency(runner, X, warmup=5, iterations=20, threads=1)
    assert 0 < lat.p50 < 50 and np.isfinite(lat.p99)
