"""A large train split is read from disk (edgekd/data/lazy.py): the same tensors, the same figures, bounded memory.

``EDGEKD_STREAM=1`` forces the lazy path on these tiny data sets; ``EDGEKD_STREAM=0`` forces the in-memory one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import edgekd.models  # noqa: F401  - the torchvision shim before timm
from edgekd._io import sha256_file
from edgekd.config import Preprocessing
from edgekd.data import lazy, load_dataset
from edgekd.data.lazy import LazyFiles, LazyImages, LazyRows, NpyRows
from edgekd.errors import DataError

SPLITS = ("train", "val", "test")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "edgekd-cache"))
    monkeypatch.delenv("EDGEKD_STREAM", raising=False)


def _npz(path: Path, sizes=(40, 12, 12), hw=(20, 20), rgb=False, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {}
    for s, n in zip(SPLITS, sizes):
        shape = (n, *hw, 3) if rgb else (n, *hw)
        arrays[f"{s}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(n) % 3).reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def _folder(root: Path) -> Path:
    """PNG folders with gray and colour images of two sizes (so the folder is RGB and must be resized)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for s in SPLITS:
        for c in ("a", "b"):
            for i in range(5):
                shape = (18, 14, 3) if i == 2 else (16, 16) if i % 2 else (12, 20)
                (root / s / c).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / s / c / f"{i}.png")
    return root


def _both(monkeypatch, path, pre, **kw):
    monkeypatch.setenv("EDGEKD_STREAM", "0")
    memory = load_dataset(path, pre, **kw)
    monkeypatch.setenv("EDGEKD_STREAM", "1")
    streamed = load_dataset(path, pre, **kw)
    return memory, streamed


def _indexes_like(lazy_images, tensor):
    n = len(tensor)
    assert isinstance(lazy_images, LazyRows) and isinstance(tensor, torch.Tensor)
    assert len(lazy_images) == n and lazy_images.shape == tensor.shape and lazy_images.ndim == 4
    assert lazy_images.dtype == torch.float32 and lazy_images.numel() == tensor.numel()
    g = torch.Generator().manual_seed(0)
    keys = [0, n - 1, -1, np.int64(3), torch.tensor(2), slice(None), slice(3, 9), slice(1, None, 3), slice(5, 5),
            torch.randperm(n, generator=g)[:7], torch.tensor([4, 4, 0, -2]), np.array([1, 0, 6]),
            torch.arange(n) % 2 == 0, torch.empty(0, dtype=torch.long)]
    for key in keys:
        got, want = lazy_images[key], tensor[key]
        assert got.dtype == torch.float32 and torch.equal(got, want), key
    assert np.array_equal(lazy_images.numpy(), tensor.numpy())
    assert torch.equal(torch.cat(list(lazy_images.chunks(rows=7))), tensor)
    with pytest.raises(IndexError):
        lazy_images[n]
    with pytest.raises(IndexError):
        lazy_images[torch.tensor([0, n])]


# ------------------------------------------------- (a) the lazy split is the in-memory split
@pytest.mark.parametrize("rgb, image_size, max_samples", [(False, None, None), (False, None, 25), (True, 32, None)],
                         ids=["npz-gray", "npz-gray-max-samples", "npz-rgb-resized"])
def test_a_streamed_npz_train_split_indexes_to_exactly_the_in_memory_tensors(tmp_path, monkeypatch, rgb, image_size,
                                                                            max_samples):
    path = _npz(tmp_path / "d.npz", rgb=rgb)
    pre = Preprocessing(image_size=image_size) if not rgb else Preprocessing(image_size=image_size,
                                                                             mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
    memory, streamed = _both(monkeypatch, path, pre, max_samples=max_samples)
    assert isinstance(streamed.train.images, LazyImages) and isinstance(streamed.train.images.raw, NpyRows)
    _indexes_like(streamed.train.images, memory.train.images)
    assert torch.equal(streamed.train.labels, memory.train.labels)
    for s in ("val", "test"):  # only the train split streams
        assert isinstance(getattr(streamed, s).images, torch.Tensor)
        assert torch.equal(getattr(streamed, s).images, getattr(memory, s).images)
    assert streamed.sha256 == memory.sha256 == sha256_file(path)
    assert (streamed.preprocessing, streamed.image_size, streamed.extra) == (memory.preprocessing, memory.image_size,
                                                                             memory.extra)


def test_a_streamed_image_folder_decodes_to_exactly_the_in_memory_tensors(tmp_path, monkeypatch):
    root = _folder(tmp_path / "imgs")
    memory, streamed = _both(monkeypatch, root, Preprocessing(image_size=24))
    assert isinstance(streamed.train.images, LazyFiles) and streamed.channels == 3
    _indexes_like(streamed.train.images, memory.train.images)
    assert torch.equal(streamed.train.labels, memory.train.labels)
    assert isinstance(streamed.val.images, torch.Tensor) and streamed.sha256 == memory.sha256


def test_every_train_split_consumer_gives_the_in_memory_result(tmp_path, monkeypatch):
    """The data key, the teacher's logits, the distillation pool (with unlabelled images), every teacher mode's
    batches, INT8 calibration and `data inspect`: the same figures from a lazy train split."""
    from edgekd.data.inspection import summarize
    from edgekd.distill.augment import Augmenter
    from edgekd.distill.source import Pool, build_signal
    from edgekd.models.teacher import Teacher
    from edgekd.pipeline.run import fingerprint_data
    from edgekd.quantize import calibration_subset

    memory, streamed = _both(monkeypatch, _npz(tmp_path / "d.npz"), Preprocessing(image_size=24))
    assert fingerprint_data(streamed) == fingerprint_data(memory)
    assert summarize(streamed) == summarize(memory)
    assert torch.equal(calibration_subset(streamed.train, 100, 0), calibration_subset(memory.train, 100, 0))
    assert torch.equal(calibration_subset(streamed.train, 9, 3), calibration_subset(memory.train, 9, 3))

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 3)).eval()
    teacher = Teacher("timm", None, "timm:tiny", None, net)
    assert torch.equal(teacher.logits(streamed.train.images, 16), teacher.logits(memory.train.images, 16))

    unlabelled = memory.test.images[:5]
    pools = [Pool.of(d.train.images, d.train.labels, unlabelled) for d in (memory, streamed)]
    assert isinstance(pools[1].images, LazyRows) and len(pools[1]) == len(pools[0]) == len(memory.train) + 5
    _indexes_like(pools[1].images, pools[0].images)
    for mode in ("plain", "online", "cached"):
        aug = Augmenter("medical" if mode != "plain" else "none", mean=(0.5,), std=(0.5,), channels=1, mixup=0.5)
        sigs = [build_signal(mode, pool, memory.val.images, teacher.logits, aug, views=2, seed=0) for pool in pools]
        assert torch.equal(sigs[0].clean, sigs[1].clean), mode
        if mode == "cached":
            assert np.array_equal(sigs[0].views, sigs[1].views) and np.array_equal(sigs[0].view_logits,
                                                                                    sigs[1].view_logits)
        idx = torch.tensor([3, 0, 44, 7, 41])
        a, b = (sig.batch(idx, seed=5) for sig in sigs)
        assert torch.equal(a.images, b.images) and torch.equal(a.teacher, b.teacher), mode
        assert torch.equal(a.labels, b.labels) and torch.equal(a.lam, b.lam), mode


# ------------------------------------------------- (b) the same metrics end to end
@pytest.mark.slow
def test_compress_with_a_streamed_train_split_reports_the_same_metrics(data_and_teacher, tmp_path, monkeypatch):
    from edgekd.api import compress
    from edgekd.config import CompressConfig

    npz, teacher = data_and_teacher
    reports = {}
    for stream in ("0", "1"):
        monkeypatch.setenv("EDGEKD_STREAM", stream)
        cfg = CompressConfig(target="generic-cpu", out=tmp_path / f"out{stream}", teacher=str(teacher), data=npz,
                             max_auc_drop=1.0, max_sensitivity_drop=1.0, max_samples=240,
                             cache_dir=tmp_path / f"stages{stream}")  # its own stage cache: every stage runs
        cfg.distill.student, cfg.distill.max_steps = "lcnet_050", 16
        cfg.prune.steps, cfg.prune.recovery_steps, cfg.quant.qat_steps = 1, 4, 4
        cfg.bench.iterations = cfg.bench.max_iterations = 20
        cfg.bench.robust_images = 0
        lines: list[str] = []
        compress(cfg, log=lines.append)
        assert any("the train split (240 images" in line and "read from disk" in line for line in lines) == (stream == "1")
        reports[stream] = json.loads((tmp_path / f"out{stream}" / "report.json").read_text())
    assert list((tmp_path / "edgekd-cache" / "data").iterdir())  # the second run did read from the data cache
    memory, streamed = reports["0"], reports["1"]
    metrics = [{c["name"]: c["metrics"] for c in r["candidates"]} for r in (memory, streamed)]
    assert len(metrics[0]) >= 8 and metrics[0] == metrics[1]
    assert memory["dataset"] == streamed["dataset"] and memory["training"] == streamed["training"]
    for stage in ("distill", "prune"):  # the training histories too, step by step
        assert _without_seconds(memory["stages"][stage]) == _without_seconds(streamed["stages"][stage]), stage
    assert _model_hashes(tmp_path / "out0") == _model_hashes(tmp_path / "out1")  # the same bytes, file by file


def _without_seconds(obj):
    if isinstance(obj, dict):
        return {k: _without_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [_without_seconds(v) for v in obj]
    return obj


def _model_hashes(out: Path) -> dict[str, str]:
    files = sorted(p for p in (out / "models").rglob("*") if p.is_file())
    assert files
    return {p.relative_to(out).as_posix(): sha256_file(p) for p in files}


# ------------------------------------------------- (c) memory stays bounded
_MEASURE = textwrap.dedent("""
    import json, sys
    import edgekd.models
    import torch
    from edgekd.config import Preprocessing
    from edgekd.data import load_dataset
    from edgekd.distill.source import Pool
    from edgekd.models.teacher import Teacher
    from edgekd.pipeline.run import fingerprint_data

    def status():
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return {k: int(fields[k].split()[0]) * 1024 for k in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}

    torch.set_num_threads(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2)).eval()
    teacher = Teacher("timm", None, "timm:tiny", None, net)
    teacher.logits(torch.zeros(128, 1, 112, 112))  # thread pools and kernels set up before the baseline
    before = status()
    data = load_dataset(sys.argv[1], Preprocessing(image_size=112))
    pool = Pool.of(data.train.images, data.train.labels)
    key = fingerprint_data(data)                    # hashes every train image
    logits = teacher.logits(pool.images)            # the teacher-signal stage on the whole pool
    g = torch.Generator().manual_seed(0)
    for idx in torch.randperm(len(pool), generator=g).split(64):  # one epoch of training batches
        x = pool.images[idx]
    after = status()
    print(json.dumps({"before": before, "after": after, "lazy": type(data.train.images).__name__,
                      "train_float32_bytes": data.train.images.numel() * 4, "logits": list(logits.shape)}))
""")


def _measure(npz: Path, stream: str, cache: Path) -> dict:
    env = {**os.environ, "EDGEKD_STREAM": stream, "EDGEKD_CACHE": str(cache), "EDGEKD_NO_PROGRESS": "1"}
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(npz)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_streamed_train_split_keeps_memory_bounded_where_the_in_memory_one_grows(tmp_path):
    """8 000 gray 28×28 images resized to 112×112: 401 MB of float32 in memory, 6 MB of uint8 on disk; then
    twice as many, streamed. Peak RSS growth (VmHWM) over load + data key + teacher logits + one epoch of
    batches, each in a fresh process."""
    npz = _npz(tmp_path / "big.npz", sizes=(8000, 16, 16), hw=(28, 28))
    streamed = _measure(npz, "1", tmp_path / "cache")
    memory = _measure(npz, "0", tmp_path / "cache")
    double = _measure(_npz(tmp_path / "big2.npz", sizes=(16000, 16, 16), hw=(28, 28)), "1", tmp_path / "cache")
    # stored at 112×112: 100 MB of uint8 cache, every byte read once an epoch. Read through a memory map
    # those pages would count as resident memory (~100 MB more); read with pread they do not
    native = _measure(_npz(tmp_path / "big112.npz", sizes=(8000, 16, 16), hw=(112, 112)), "1", tmp_path / "cache")
    full = streamed["train_float32_bytes"]
    assert full == 8000 * 112 * 112 * 4 and streamed["logits"] == memory["logits"] == [8000, 2]
    assert streamed["lazy"] == double["lazy"] == "LazyImages" and memory["lazy"] == "Tensor"

    def grown(r: dict, key: str = "VmHWM") -> int:
        return r["after"][key] - r["before"][key]

    mib = 2**20
    print(f"peak RSS growth (VmHWM): in memory {grown(memory) / mib:.0f} MiB, streamed {grown(streamed) / mib:.0f} "
          f"MiB, streamed with twice the images {grown(double) / mib:.0f} MiB (train split {full / mib:.0f} MiB of "
          f"float32); RssAnon growth: in memory {grown(memory, 'RssAnon') / mib:.0f} MiB, streamed "
          f"{grown(streamed, 'RssAnon') / mib:.0f} MiB, twice the images {grown(double, 'RssAnon') / mib:.0f} MiB; "
          f"streamed from a 112×112 cache {grown(native) / mib:.0f} MiB (RssFile {grown(native, 'RssFile') / mib:.0f} MiB "
          "for 96 MiB of cache)")
    assert grown(memory) > 0.95 * full  # the measurement sees a whole split when one is loaded
    assert grown(streamed) < full / 4  # a lazy split costs a small fraction of it
    assert grown(double) - grown(streamed) < full / 16  # and that does not grow with the data set
    assert native["train_float32_bytes"] == full and grown(native) < full / 3
    assert grown(native, "RssFile") < 8000 * 112 * 112 / 4  # the cache's pages are not mapped into the process


# ------------------------------------------------- (d) the cache: once, keyed by the sha256, atomic
def test_the_npz_cache_is_written_once_in_a_folder_named_by_the_files_sha256(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_STREAM", "1")
    path = _npz(tmp_path / "d.npz")
    first = load_dataset(path, Preprocessing())
    folder = tmp_path / "edgekd-cache" / "data" / sha256_file(path)
    cached = folder / "train_images.npy"
    assert sorted(p.name for p in folder.iterdir()) == ["train_images.npy"]  # no temporary left behind
    with np.load(path) as z:
        assert np.array_equal(np.load(cached), z["train_images"])
    stamp = (cached.stat().st_ino, cached.stat().st_mtime_ns)
    second = load_dataset(path, Preprocessing(image_size=16), max_samples=20)  # other settings, same file
    assert (cached.stat().st_ino, cached.stat().st_mtime_ns) == stamp  # read, not written again
    assert second.train.images.raw.path == cached and first.train.images.raw.path == cached
    other = _npz(tmp_path / "e.npz", seed=1)
    load_dataset(other, Preprocessing())
    assert sorted(p.name for p in (tmp_path / "edgekd-cache" / "data").iterdir()) == sorted(
        [sha256_file(path), sha256_file(other)])


def test_a_damaged_cache_file_is_written_again(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_STREAM", "1")
    path = _npz(tmp_path / "d.npz")
    load_dataset(path, Preprocessing())
    cached = tmp_path / "edgekd-cache" / "data" / sha256_file(path) / "train_images.npy"
    cached.write_bytes(cached.read_bytes()[:200])  # truncated, as by a full disk
    memory = load_dataset(path, Preprocessing())
    with np.load(path) as z:
        assert np.array_equal(np.load(cached), z["train_images"])
    assert memory.train.images.shape == (40, 1, 20, 20)


def test_a_cache_that_cannot_be_written_is_a_one_line_error_naming_the_fixes(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("EDGEKD_CACHE", str(blocker))
    monkeypatch.setenv("EDGEKD_STREAM", "1")
    with pytest.raises(DataError) as err:
        load_dataset(_npz(tmp_path / "d.npz"), Preprocessing())
    msg = str(err.value)
    assert "\n" not in msg and "cannot write the data cache" in msg and "EDGEKD_CACHE" in msg and "EDGEKD_STREAM=0" in msg
    monkeypatch.setenv("EDGEKD_STREAM", "0")  # the way out it names works
    assert isinstance(load_dataset(tmp_path / "d.npz", Preprocessing()).train.images, torch.Tensor)


# ------------------------------------------------- when it streams
def test_a_run_says_when_its_train_split_is_read_from_disk(tmp_path, monkeypatch):
    from edgekd.inputs import _say_if_streamed

    memory, streamed = _both(monkeypatch, _npz(tmp_path / "d.npz"), Preprocessing())
    lines: list[str] = []
    _say_if_streamed(memory, lines.append)
    assert lines == []
    _say_if_streamed(streamed, lines.append)
    assert lines == ["data: the train split (40 images, 0.00 GiB as float32) is read from disk and preprocessed per "
                     "batch (EDGEKD_STREAM=1; EDGEKD_STREAM=0 holds it in memory)"]


def test_the_train_split_streams_above_the_size_threshold_unless_told(monkeypatch):
    limit = lazy.STREAM_MIN_BYTES
    n = limit // (224 * 224 * 4)
    assert not lazy.stream_train(n, 1, (224, 224)) and lazy.stream_train(n + 1, 1, (224, 224))
    assert lazy.stream_train(50_000, 3, (224, 224))  # the 30 GB train split
    assert not lazy.stream_train(3882, 1, (224, 224))  # PneumoniaMNIST's train split at 224×224: 780 MB
    monkeypatch.setenv("EDGEKD_STREAM", "1")
    assert lazy.stream_train(1, 1, (8, 8))
    monkeypatch.setenv("EDGEKD_STREAM", "0")
    assert not lazy.stream_train(50_000, 3, (224, 224))
    monkeypatch.setenv("EDGEKD_STREAM", "yes")
    with pytest.raises(DataError, match="EDGEKD_STREAM='yes': use 1"):
        lazy.stream_train(1, 1, (8, 8))


def test_a_large_train_split_streams_by_itself_and_small_ones_stay_in_memory(tmp_path, monkeypatch):
    path = _npz(tmp_path / "d.npz")  # train: 40 × 20 × 20 float32 = 64 000 bytes
    assert isinstance(load_dataset(path, Preprocessing()).train.images, torch.Tensor)
    monkeypatch.setattr(lazy, "STREAM_MIN_BYTES", 63_999)
    data = load_dataset(path, Preprocessing())
    assert isinstance(data.train.images, LazyImages) and isinstance(data.val.images, torch.Tensor)
    assert isinstance(load_dataset(path, Preprocessing(), max_samples=39).train.images, torch.Tensor)


def test_float_pixels_stay_on_the_in_memory_path(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_STREAM", "1")
    path = _npz(tmp_path / "d.npz")
    with np.load(path) as z:
        arrays = {k: z[k].astype(np.float32) if k.endswith("_images") else z[k] for k in z.files}
    np.savez(path, **arrays)
    assert isinstance(load_dataset(path, Preprocessing()).train.images, torch.Tensor)
    assert not (tmp_path / "edgekd-cache").exists()
