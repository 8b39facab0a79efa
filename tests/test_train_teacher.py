"""`edgekd train-teacher` and the one training loop under it.

A teacher trained on a small generated slice (64 images of 32×32 per split) from a stand-in
"ImageNet" file (3 channels, 1000 classes) is taken by compress as it is; the head phase really
freezes the backbone; the same seed gives the same teacher; the ONNX file computes what torch
computes; bad inputs fail with one line and leave no --out.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekd._compat import import_timm
from edgekd.cli import app
from edgekd.config import CompressConfig, Preprocessing
from edgekd.data import load_dataset, make_synthetic_xrays
from edgekd.data._base import Split
from edgekd.errors import InputError
from edgekd.models import save_weights
from edgekd.train import (
    Phase,
    TeacherTrainConfig,
    fit_classifier,
    resolve_device,
    train_teacher,
)
from edgekd.train.loop import classifier_of

runner = CliRunner()
ARCH = "test_resnet"  # timm's own tiny test network: a real stem, BatchNorm and classifier, milliseconds a step
QUICK = ["--max-steps", "4", "--head-steps", "2", "--batch-size", "32"]


@pytest.fixture(scope="module")
def slice_npz(tmp_path_factory):
    d = tmp_path_factory.mktemp("tt")
    arrays = {}
    for i, split in enumerate(("train", "val", "test")):
        x, y = make_synthetic_xrays(64, size=32, seed=i)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y.reshape(-1, 1)
    np.savez(d / "slice.npz", **arrays)
    return d / "slice.npz"


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory):
    """Weights as a pretrained file would hold them: RGB stem, 1000-class head."""
    torch.manual_seed(1)
    model = import_timm().create_model(ARCH, pretrained=False, in_chans=3, num_classes=1000)
    return save_weights(model, tmp_path_factory.mktemp("w") / "imagenet.safetensors")


@pytest.fixture(scope="module")
def trained(slice_npz, imagenet_like, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "teacher"
    result = runner.invoke(app, ["train-teacher", "--data", str(slice_npz), "--arch", ARCH, "--weights",
                                 str(imagenet_like), "--out", str(out), *QUICK])
    assert result.exit_code == 0, result.output
    return out, result.output


def _small_data(slice_npz):
    return load_dataset(slice_npz, Preprocessing())


def test_train_teacher_writes_a_teacher_that_compress_accepts(trained, slice_npz, imagenet_like):
    out, output = trained
    assert {p.name for p in out.iterdir()} == {"teacher.safetensors", "teacher.onnx", "report.json", "report.md",
                                               "training_curve.png"}
    assert not list(out.parent.glob(".teacher.partial*"))
    r = json.loads((out / "report.json").read_text())
    assert r["arch"] == ARCH and r["weights"]["source"] == "file" and len(r["weights"]["sha256"]) == 64
    notes = " ".join(r["weights"]["notes"])
    assert "adapted to 1" in notes and "1000 classes in the file, re-initialised for 2" in notes
    b = r["training"]["budget"]
    assert (b["total_steps"], b["head_steps"], b["full_steps"], b["source"]) == (4, 2, 2, "--max-steps")
    assert r["training"]["history"][0]["phase"] == "start"
    assert {h["phase"] for h in r["training"]["history"][1:]} == {"head", "full"}
    assert any("affine" in op for op in r["training"]["augmentation"]["ops"])  # distillation's kornia views
    for split in ("val", "test"):
        m = r["metrics"][split]
        assert 0 <= m["auc"] <= 1 and len(m["auc_ci"]) == 2 and m["auc_ci"][0] <= m["auc_ci"][1]
    assert r["data"]["sha256"] == _small_data(slice_npz).sha256 and r["training"]["seed"] == 0
    assert r["onnx"]["agreement"]["ok"] and r["onnx"]["agreement"]["n"] == 64
    assert (out / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert f"{r['metrics']['test']['auc']:.4f}" in md and "training_curve.png" in md
    assert "test AUC" in output

    # compress takes it as it is: resolve_inputs checks teacher against data and picks the student
    from edgekd.inputs import resolve_inputs

    cfg = CompressConfig(teacher=str(out / "teacher.onnx"), data=slice_npz, target="generic-cpu", out=out.parent / "b")
    inputs = resolve_inputs(cfg, log=lambda m: None)
    assert inputs.teacher.format == "onnx" and inputs.data.num_classes == 2
    # and so do the safetensors, as timm:<arch> + --teacher-weights
    from edgekd.models import load_teacher

    t = load_teacher(f"timm:{ARCH}", weights=out / "teacher.safetensors", in_chans=1, num_classes=2)
    t.check(1, 2, (32, 32))


def test_the_onnx_file_computes_what_the_torch_teacher_computes(trained, slice_npz):
    from safetensors.torch import load_file

    from edgekd.lower.onnx import OnnxRuntimeRunner
    from edgekd.lower.validate import check_agreement
    from edgekd.models.predict import predict_logits

    out, _ = trained
    model = import_timm().create_model(ARCH, pretrained=False, in_chans=1, num_classes=2)
    model.load_state_dict(load_file(str(out / "teacher.safetensors")))
    x = _small_data(slice_npz).test.images
    ref = predict_logits(model, x).numpy()
    got = OnnxRuntimeRunner(out / "teacher.onnx", threads=1)(x.numpy())
    a = check_agreement("teacher.onnx", ref, got, precision="fp32")
    assert a.ok and a.max_abs_diff < 1e-4
    assert not np.allclose(ref, 0)  # a real comparison, not two constant outputs


def test_the_same_seed_trains_the_same_teacher(trained, slice_npz, imagenet_like, tmp_path):
    from safetensors.torch import load_file

    out, _ = trained
    cfg = TeacherTrainConfig(data=slice_npz, arch=ARCH, weights=imagenet_like, out=tmp_path / "again", max_steps=4,
                             head_steps=2, batch_size=32)
    train_teacher(cfg, log=lambda m: None)
    a, b = load_file(str(out / "teacher.safetensors")), load_file(str(tmp_path / "again" / "teacher.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    ra = json.loads((out / "report.json").read_text())["training"]["history"]
    rb = json.loads((tmp_path / "again" / "report.json").read_text())["training"]["history"]
    assert [h["val_loss"] for h in ra] == [h["val_loss"] for h in rb]


# ---------------------------------------------------------------- the loop
def _blobs(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.randn(n, 1, 16, 16, generator=g)
    images[labels == 1, :, 5:11, 5:11] += 0.8
    return Split(images, labels)


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return import_timm().create_model(ARCH, pretrained=False, in_chans=1, num_classes=2)


def test_the_head_phase_freezes_the_backbone_and_the_full_phase_trains_it():
    model = _tiny()
    head = classifier_of(model)
    head_keys = {f"{n}.{k}" for n, m in model.named_modules() if m is head for k in m.state_dict()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit_classifier(model, _blobs(64, 1), _blobs(32, 2), [Phase("head", 4, 1e-2, frozen_backbone=True)],
                   batch_size=16, patience=None)
    after = {k: v.clone() for k, v in model.state_dict().items()}
    backbone = [k for k in before if k not in head_keys]
    assert backbone and head_keys
    # weights and BatchNorm statistics alike: the backbone did not move
    assert all(torch.equal(before[k], after[k]) for k in backbone)
    assert not all(torch.equal(before[k], after[k]) for k in head_keys)
    assert all(p.requires_grad for p in model.parameters())  # trainable again afterwards
    fit_classifier(model, _blobs(64, 1), _blobs(32, 2), [Phase("full", 4, 1e-2)], batch_size=16, patience=None)
    moved = model.state_dict()
    assert not all(torch.equal(after[k], moved[k]) for k in backbone if moved[k].is_floating_point())


def test_the_loop_is_seeded_and_keeps_the_best_val_checkpoint():
    from edgekd.distill.augment import Augmenter
    from edgekd.metrics.classification import roc_auc

    views = Augmenter("medical", mean=(0.5,), std=(0.5,), channels=1, mixup=0.5)

    def run(seed: int):
        model = _tiny()
        res = fit_classifier(model, _blobs(64, 1), _blobs(32, 2), [Phase("full", 6, 1e-2)], views=views,
                             batch_size=16, every=2, patience=None, seed=seed)
        return model, res

    (a, ra), (b, _), (c, _) = run(0), run(0), run(1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert [h["step"] for h in ra.history] == [0, 2, 4, 6] and ra.steps_run == 6
    best = max(ra.history[1:], key=lambda h: h["val_auc"])
    assert ra.best_val_auc == best["val_auc"]
    val = _blobs(32, 2)
    with torch.no_grad():
        assert roc_auc(a(val.images).numpy(), val.labels.numpy()) == pytest.approx(ra.best_val_auc)


def test_early_stopping_ends_a_run_that_no_longer_improves():
    torch.manual_seed(0)  # no BatchNorm: at a vanishing learning rate nothing about the model moves
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(16, 2))
    res = fit_classifier(model, _blobs(64, 1), _blobs(32, 2), [Phase("full", 50, 1e-12)], batch_size=16, every=1,
                         patience=2, min_fraction=0.0)
    assert res.stopped_early and res.steps_run == 2 and res.steps_planned == 50
    assert [h["step"] for h in res.history] == [0, 1, 2]
    res = fit_classifier(model, _blobs(64, 1), _blobs(32, 2), [Phase("full", 6, 1e-12)], batch_size=16, every=1,
                         patience=2, min_fraction=0.9)  # not before 90 % of the phase
    assert not res.stopped_early and res.steps_run == 6
    # a head phase that stops early hands over to the whole network; it does not end the run
    res = fit_classifier(model, _blobs(64, 1), _blobs(32, 2), [Phase("head", 10, 1e-12, frozen_backbone=True),
                         Phase("full", 3, 1e-12)], batch_size=16, every=1, patience=2, min_fraction=0.0)
    assert res.stopped_phases == ["head", "full"] and res.steps_run == 4
    assert [h["phase"] for h in res.history] == ["start", "head", "head", "full", "full"]


def test_devices_resolve_or_fail_in_one_line():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            resolve_device("cuda:0")


# ---------------------------------------------------------------- bad inputs, through the CLI
def _bad(tmp_path, *args: str) -> str:
    out = tmp_path / "teacher"
    result = runner.invoke(app, ["train-teacher", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert not out.exists() and not list(tmp_path.glob(".teacher.partial*"))  # no half-written --out
    return errors[0]


def test_an_unknown_arch_fails_with_a_suggestion(slice_npz, tmp_path):
    line = _bad(tmp_path, "--data", str(slice_npz), "--arch", "resnet5O")
    assert "unknown timm architecture 'resnet5O'" in line and "did you mean 'resnet50'" in line


def test_weights_of_another_arch_fail_in_one_line(slice_npz, tmp_path):
    other = import_timm().create_model("resnet10t", pretrained=False, in_chans=3, num_classes=1000)
    w = save_weights(other, tmp_path / "r10t.safetensors")
    line = _bad(tmp_path, "--data", str(slice_npz), "--arch", ARCH, "--weights", str(w), *QUICK)
    assert f"teacher weights r10t.safetensors do not fit timm:{ARCH}" in line and "timm:resnet10t" in line


def test_missing_files_and_bad_settings_fail_in_one_line(slice_npz, tmp_path):
    line = _bad(tmp_path, "--data", str(slice_npz), "--arch", ARCH, "--weights", str(tmp_path / "nope.pt"))
    assert "nope.pt does not exist" in line and "--weights" in line
    line = _bad(tmp_path, "--data", str(tmp_path / "none.npz"), "--arch", ARCH)
    assert "none.npz does not exist" in line
    line = _bad(tmp_path, "--data", str(slice_npz), "--arch", ARCH, "--device", "tpu")
    assert "unknown device 'tpu'" in line
    line = _bad(tmp_path, "--data", str(slice_npz), "--arch", ARCH, "--max-steps", "2", "--head-steps", "3")
    assert "--head-steps 3 exceeds --max-steps 2" in line


def test_an_existing_out_is_kept_unless_overwrite(trained, slice_npz):
    out, _ = trained
    before = (out / "teacher.safetensors").read_bytes()
    result = runner.invoke(app, ["train-teacher", "--data", str(slice_npz), "--arch", ARCH, "--out", str(out), *QUICK])
    assert result.exit_code == 2 and "already exists" in result.output
    assert (out / "teacher.safetensors").read_bytes() == before
