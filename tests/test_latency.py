"""Latency measurement: honest percentiles, the iterations asked for, the threads asked for, adaptive
iterations until the median is stable, batch-N figures, session memory, and the precision notes."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

from edgekd.config import BenchConfig
from edgekd.errors import InputError
from edgekd.lower.torch import TorchRunner
from edgekd.measure.candidates import Candidate
from edgekd.measure.latency import (
    Latency,
    batch_of,
    latency_report,
    measure_latency,
    median_ci95,
    relative_ci,
    session_memory,
    time_candidate,
)
from edgekd.measure.machine import machine_info, machine_summary, parse_cpuinfo

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
    assert set(lat.to_dict()) == {"p50", "p90", "p99", "mean", "throughput", "batch", "iterations", "warmup", "threads",
                                  "ci95_rel", "stop", "seconds"}
    assert lat.stop == "fixed"  # no max_iterations: exactly the count asked for


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


# --------------------------------------------------------------------------- adaptive iterations


class Jittery(Counting):
    """Call times alternate between 1 and 3 ms: the median's CI stays wide until enough calls."""

    def __init__(self, delays) -> None:
        super().__init__()
        self.delays = delays

    def __call__(self, x):
        time.sleep(self.delays[self.calls % len(self.delays)])
        return super().__call__(x)


def test_a_steady_runner_stops_as_soon_as_the_median_is_stable():
    runner = Sleeping()
    lat = measure_latency(runner, X, warmup=2, iterations=40, threads=1, max_iterations=2000, rel_ci=0.5)
    assert lat.stop == "stable" and lat.iterations == 40 and runner.calls == 42
    assert lat.ci95_rel <= 0.5


def test_an_unstable_runner_keeps_going_until_the_cap_and_says_so():
    runner = Jittery([0.0005, 0.003])
    lat = measure_latency(runner, X, warmup=0, iterations=20, threads=1, max_iterations=120, rel_ci=1e-6,
                          max_seconds=60)
    assert lat.stop == "max_iterations" and lat.iterations == 120 and runner.calls == 120
    assert lat.ci95_rel > 1e-6


def test_the_time_cap_ends_timing_after_the_minimum():
    lat = measure_latency(Jittery([0.001, 0.004]), X, warmup=0, iterations=20, threads=1, max_iterations=100000,
                          rel_ci=1e-6, max_seconds=0.2)
    assert lat.stop == "time_cap"
    assert 20 <= lat.iterations < 200 and lat.seconds >= 0.2


def test_the_minimum_iterations_are_always_timed_even_past_the_time_cap():
    lat = measure_latency(Sleeping(), X, warmup=0, iterations=30, threads=1, max_iterations=1000, rel_ci=1e-9,
                          max_seconds=0.001)
    assert lat.iterations == 30 and lat.stop == "time_cap"


def test_median_ci_is_distribution_free_order_statistics():
    x = np.arange(1, 101, dtype=float)  # n = 100: ranks 40 and 61 (the textbook interval)
    assert median_ci95(x) == (40.0, 61.0)
    assert median_ci95(np.array([5.0])) == (5.0, 5.0)
    assert relative_ci(np.full(50, 2.0)) == 0.0


def test_batch_of_repeats_images_to_fill_a_batch():
    imgs = np.arange(3, dtype=np.float32).reshape(3, 1, 1, 1)
    assert batch_of(imgs, 2).ravel().tolist() == [0, 1]
    assert batch_of(imgs, 7).ravel().tolist() == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(InputError):
        batch_of(imgs, 0)


def test_report_dict_has_the_schema_keys_and_the_profile_batch():
    one = measure_latency(Counting(), X, warmup=1, iterations=5, threads=1)
    eight = measure_latency(Counting(), np.zeros((8, 1, 8, 8), np.float32), warmup=1, iterations=5, threads=1)
    d = latency_report(one, eight)
    assert {"p50", "p90", "p99", "mean", "throughput_ips", "batch", "iterations", "warmup", "threads", "ci95_rel",
            "stop"} <= set(d)
    assert d["batch"] == 1 and d["at_batch"]["batch"] == 8
    assert latency_report(one)["at_batch"] is None and latency_report(None) is None
    json.dumps(d, allow_nan=False)


def test_time_candidate_times_batch_1_and_the_profile_batch_with_the_config(tmp_path):
    cand = Candidate("c", "lower", "fake", "fp32", "student", Counting())
    cfg = BenchConfig(warmup=1, iterations=10, max_iterations=10, memory=True)
    time_candidate(cand, np.zeros((5, 1, 8, 8), np.float32), cfg, threads=1, batch=4)
    assert cand.latency.batch == 1 and cand.latency_batch.batch == 4 and cand.latency.iterations == 10
    assert cand.memory is None  # a runtime without a session to measure
    d = cand.to_dict(tmp_path)
    assert d["latency_ms"]["at_batch"]["batch"] == 4 and d["memory_mb"] is None


# --------------------------------------------------------------------------- session memory (child process)


def _tiny_onnx(tmp_path, channels=4):
    from edgekd.lower.onnx import export_onnx

    model = torch.nn.Sequential(torch.nn.Conv2d(1, channels, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(channels, 2))
    return export_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / f"m{channels}.onnx")


def test_session_memory_is_measured_in_a_child_and_grows_with_the_weights(tmp_path):
    from edgekd.measure.memory import measure_session_memory

    small = measure_session_memory("onnxruntime", _tiny_onnx(tmp_path, 4), (1, 1, 8, 8), threads=1, iterations=3)
    # ~2.4 M fp32 weights (9.4 MB) must show up in the session's share of the peak
    from edgekd.lower.onnx import export_onnx

    big_model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 36864), torch.nn.Linear(36864, 2))
    big = measure_session_memory("onnxruntime", export_onnx(big_model, torch.zeros(1, 1, 8, 8), tmp_path / "big.onnx"),
                                 (1, 1, 8, 8), threads=1, iterations=3)
    assert 0 < small.baseline_mb < small.peak_mb and small.session_mb == pytest.approx(small.peak_mb - small.baseline_mb)
    assert big.session_mb > small.session_mb + 8, (small, big)
    assert "child process" in big.method


def test_a_session_that_cannot_load_leaves_a_note_not_a_crash(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    cand = Candidate("c", "lower", "onnxruntime", "fp32", "student", Counting(), path=bad)
    assert session_memory(cand, (1, 8, 8), threads=1) is None
    assert cand.notes and cand.notes[0].startswith("peak memory not measured")


# --------------------------------------------------------------------------- machine


def test_isa_flags_cover_avx2_vnni_bf16_amx():
    text = "model name\t: Some Xeon\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16\n"
    model, isa = parse_cpuinfo(text)
    assert model == "Some Xeon"
    assert {"AVX2", "AVX-512 VNNI", "AVX-512 BF16", "AMX", "AMX-INT8", "AMX-BF16"} <= set(isa)
    assert parse_cpuinfo("Features\t: fp asimd asimddp bf16\n", "aarch64") == ("aarch64", ["NEON", "NEON dot product", "Arm BF16"])
    info = machine_info(threads=2)
    assert info["threads"] == 2 and "onnxruntime" in info["runtimes"] and len(info["loadavg"]) == 3
    assert machine_summary({"cpu": "X", "isa": ["AVX2", "FMA", "AMX"], "threads": 2}) == "X (AVX2, AMX), 2 threads"


# --------------------------------------------------------------------------- precision chosen by measurement


def _timed(name, backend, precision, p50, auc, ci=0.01):
    c = Candidate(name, "lower", backend, precision, "student", None)
    c.latency = Latency(p50, p50, p50, p50, 1e3 / p50, 1, 200, 20, 2, ci, "stable", 1.0)
    c.metrics = NS(auc=auc)
    return c


def test_int8_slower_than_fp32_is_said_and_fp32_ships():
    from edgekd.report.precision import precision_notes
    from edgekd.targets import load_target

    fp32 = _timed("student-fp32-openvino", "openvino", "fp32", 0.189, 0.945)
    int8 = _timed("student-int8-openvino", "openvino", "int8", 0.215, 0.944)
    ort = [_timed("student-fp32-onnxruntime", "onnxruntime", "fp32", 0.19, 0.945),
           _timed("student-int8-onnxruntime", "onnxruntime", "int8", 0.72, 0.94)]
    notes = precision_notes([fp32, int8, *ort], load_target("intel-cpu"), shipped=fp32, min_auc=0.94)
    ov = next(n for n in notes if n["runtime"] == "openvino")
    assert ov["slower"] and not ov["tie"] and ov["ratio"] == pytest.approx(0.215 / 0.189)
    assert "SLOWER than fp32" in ov["note"] and "fp32 ships" in ov["note"] and ov["shipped_precision"] == "fp32"
    other = next(n for n in notes if n["runtime"] == "onnxruntime")
    assert other["slower"] and not other["target_runtime"] and "ships" not in other["note"]


def test_faster_int8_outside_the_budget_is_explained():
    from edgekd.report.precision import precision_notes
    from edgekd.targets import load_target

    fp32 = _timed("f", "onnxruntime", "fp32", 1.0, 0.95)
    int8 = _timed("i", "onnxruntime", "int8", 0.3, 0.90)
    (note,) = precision_notes([fp32, int8], load_target("generic-cpu"), shipped=fp32, min_auc=0.94)
    assert not note["slower"] and "3.33× faster" in note["note"]
    assert "outside the accuracy budget (test AUC 0.9000 < floor 0.9400)" in note["note"]


def test_a_difference_inside_the_measurement_noise_is_a_tie():
    from edgekd.report.precision import precision_notes
    from edgekd.targets import load_target

    fp32, int8 = _timed("f", "openvino", "fp32", 1.00, 0.95, ci=0.02), _timed("i", "openvino", "int8", 1.03, 0.95, ci=0.02)
    (note,) = precision_notes([fp32, int8], load_target("intel-cpu"), shipped=fp32)
    assert note["tie"] and not note["slower"] and "about as fast" in note["note"]
