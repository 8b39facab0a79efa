"""Bad input through the CLI: one line saying what is wrong and how to fix it, exit code 2,
and no --out folder left behind."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekd._compat import import_timm
from edgekd.cli import app

runner = CliRunner()


def _npz(path: Path, n: int = 24, size: int = 32, rgb: bool = False, classes: int = 2, drop: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    shape = (n, size, size, 3) if rgb else (n, size, size)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 255, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(-1, 1)
    if drop:
        arrays.pop(drop)
    np.savez(path, **arrays)
    return path


def _onnx(path: Path, in_chans: int = 1, classes: int = 2, flatten_output: bool = True) -> Path:
    model = import_timm().create_model("resnet10t", pretrained=False, in_chans=in_chans, num_classes=classes).eval()
    if not flatten_output:  # a "segmentation-like" model: 4-D output
        model = torch.nn.Sequential(torch.nn.Conv2d(in_chans, 2, 3, padding=1))
    torch.onnx.export(model, torch.randn(1, in_chans, 32, 32), str(path), dynamo=False,
                      input_names=["input"], output_names=["out"], dynamic_axes={"input": {0: "b"}, "out": {0: "b"}})
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    f = {
        "npz": _npz(d / "ok.npz"),
        "npz_missing_key": _npz(d / "nokey.npz", drop="val_labels"),
        "npz_3cls": _npz(d / "three.npz", classes=3),
        "npz_rgb": _npz(d / "rgb.npz", rgb=True),
        "onnx": _onnx(d / "teacher.onnx"),
        "onnx_not_classifier": _onnx(d / "seg.onnx", flatten_output=False),
    }
    raw = f["onnx"].read_bytes()
    (d / "truncated.onnx").write_bytes(raw[: len(raw) // 2])
    f["onnx_truncated"] = d / "truncated.onnx"
    sd = import_timm().create_model("resnet10t", pretrained=False, in_chans=1, num_classes=2).state_dict()
    torch.save(sd, d / "weights.pt")
    f["weights"] = d / "weights.pt"
    (d / "truncated.pt").write_bytes((d / "weights.pt").read_bytes()[:1000])
    f["weights_truncated"] = d / "truncated.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2)), d / "pickled.pt")
    f["pickled"] = d / "pickled.pt"
    folder = d / "folder"
    from PIL import Image

    for split in ("train", "val", "test"):
        for cls in ("normal", "pneumonia"):
            (folder / split / cls).mkdir(parents=True)
            if not (split == "val" and cls == "pneumonia"):
                Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / split / cls / "a.png")
    f["folder_empty_class"] = folder
    return f


CASES = {
    # name: (args, words the one-line message must contain)
    "missing teacher file": (["--teacher", "{tmp}/nope.onnx", "--data", "{npz}"], ["nope.onnx", "not exist"]),
    "missing data file": (["--teacher", "{onnx}", "--data", "{tmp}/nope.npz"], ["nope.npz", "not exist"]),
    "missing teacher weights": (["--teacher", "timm:resnet10t", "--teacher-weights", "{tmp}/w.pt", "--data", "{npz}"], ["w.pt"]),
    "truncated onnx": (["--teacher", "{onnx_truncated}", "--data", "{npz}"], ["truncated.onnx"]),
    "truncated checkpoint": (["--teacher", "timm:resnet10t", "--teacher-weights", "{weights_truncated}", "--data", "{npz}"], ["truncated.pt"]),
    "onnx that is not a classifier": (["--teacher", "{onnx_not_classifier}", "--data", "{npz}"], ["classifier"]),
    "class count mismatch": (["--teacher", "{onnx}", "--data", "{npz_3cls}"], ["3"]),
    "channel mismatch": (["--teacher", "{onnx}", "--data", "{npz_rgb}"], ["channel"]),
    "npz missing a key": (["--teacher", "{onnx}", "--data", "{npz_missing_key}"], ["val_labels"]),
    "empty class folder": (["--teacher", "{onnx}", "--data", "{folder_empty_class}"], ["pneumonia", "empty"]),
    "unknown target": (["--teacher", "{onnx}", "--data", "{npz}", "--target", "intel-cpus"], ["did you mean 'intel-cpu'"]),
    "unknown timm teacher": (["--teacher", "timm:resnet19", "--teacher-weights", "{weights}", "--data", "{npz}"], ["resnet19", "did you mean"]),
    "pickled module without trust": (["--teacher", "{pickled}", "--data", "{npz}"], ["--trust-checkpoint"]),
    "state_dict given as teacher": (["--teacher", "{weights}", "--data", "{npz}"], ["timm:"]),
    "teacher without data": (["--teacher", "{onnx}"], ["--data"]),
    "bad mean": (["--teacher", "{onnx}", "--data", "{npz}", "--mean", "a,b"], ["--mean"]),
    "unknown student": (["--teacher", "{onnx}", "--data", "{npz}", "--student", "mobilenetv3_smal_050"], ["did you mean"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_exit_2_and_no_output(case, files, tmp_path):
    args, words = CASES[case]
    subst = {k: str(v) for k, v in files.items()} | {"tmp": str(tmp_path)}
    out = tmp_path / "out"
    result = runner.invoke(app, ["compress", *[a.format(**subst) for a in args], "--out", str(out)])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in result.output
    for w in words:
        assert w in err, f"{w!r} not in {err!r}"
    assert not out.exists()
    assert not any(p.name.startswith(".out.partial") for p in tmp_path.iterdir())


def test_existing_out_folder_is_not_overwritten_silently(files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["compress", "--teacher", str(files["onnx"]), "--data", str(files["npz"]),
                                 "--out", str(out)])
    assert result.exit_code == 2
    assert "--overwrite" in result.stderr
    assert (out / "keep.txt").read_text() == "mine"
