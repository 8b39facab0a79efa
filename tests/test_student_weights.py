"""--student-weights: pretrained weights for a zoo student, with the stem and head bridged as timm does.

Every file is made here from timm models built locally (nothing is downloaded).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgekd.errors import InputError
from edgekd.models import create_student, load_student_weights
from edgekd.models._weights import _GUESSES


def _timm(name: str, in_chans: int, num_classes: int, seed: int = 1) -> torch.nn.Module:
    return create_student(name, in_chans, num_classes, seed=seed)  # any timm name, seeded


@pytest.fixture(scope="module")
def imagenet_lcnet(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """An "ImageNet" lcnet_100 state_dict: 3 channels, 1000 classes."""
    state = _timm("lcnet_100", 3, 1000).state_dict()
    path = tmp_path_factory.mktemp("w") / "lcnet_100_in1k.pth"
    torch.save(state, path)
    return path, state


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def test_rgb_imagenet_weights_into_a_gray_two_class_student(imagenet_lcnet):
    path, src = imagenet_lcnet
    fresh = _timm("lcnet_100", 1, 2, seed=0)
    init = {k: v.clone() for k, v in fresh.state_dict().items()}
    info = load_student_weights(fresh, path, in_chans=1, num_classes=2)
    got = fresh.state_dict()

    assert info["adapted"] == ["conv_stem.weight"]
    assert torch.allclose(got["conv_stem.weight"], src["conv_stem.weight"].sum(dim=1, keepdim=True))  # RGB -> gray
    assert info["reinitialised"] == ["classifier.weight", "classifier.bias"]
    assert torch.equal(got["classifier.weight"], init["classifier.weight"])  # the student's seeded head stays
    assert got["classifier.weight"].shape == (2, 1280)
    others = [k for k in got if k not in ("conv_stem.weight", "classifier.weight", "classifier.bias")]
    assert all(torch.equal(got[k], src[k]) for k in others)
    assert info["matched"] + len(info["adapted"]) + len(info["reinitialised"]) == info["tensors"]
    assert len(info["sha256"]) == 64 and info["path"] == str(path)
    assert any("1000 classes in the file" in n for n in info["notes"])
    with torch.no_grad():
        assert fresh.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 2)


def test_gray_weights_into_an_rgb_student_repeat_the_filter(tmp_path):
    src = _timm("mobilenetv3_small_050", 1, 5).state_dict()
    torch.save(src, tmp_path / "gray.pt")
    student = _timm("mobilenetv3_small_050", 3, 5, seed=0)
    info = load_student_weights(student, tmp_path / "gray.pt", in_chans=3, num_classes=5)
    w = student.state_dict()["conv_stem.weight"]
    assert info["adapted"] == ["conv_stem.weight"] and info["reinitialised"] == []
    assert torch.allclose(w, src["conv_stem.weight"].repeat(1, 3, 1, 1) / 3)


def test_safetensors_same_shapes_load_unchanged(tmp_path):
    from safetensors.torch import save_file

    src = _timm("resnet10t", 3, 5).state_dict()
    save_file({k: v.contiguous() for k, v in src.items()}, str(tmp_path / "w.safetensors"))
    student = _timm("resnet10t", 3, 5, seed=0)
    info = load_student_weights(student, tmp_path / "w.safetensors", in_chans=3, num_classes=5)
    assert info["adapted"] == [] and info["reinitialised"] == [] and info["matched"] == info["tensors"]
    got = student.state_dict()
    assert all(torch.equal(got[k], src[k]) for k in src)


def test_wrapped_checkpoint_with_module_prefix(tmp_path):
    src = _timm("mobilenetv3_small_050", 1, 2).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.items()}, "epoch": 7}, tmp_path / "ckpt.pth")
    student = _timm("mobilenetv3_small_050", 1, 2, seed=0)
    info = load_student_weights(student, tmp_path / "ckpt.pth", in_chans=1, num_classes=2)
    assert info["matched"] == info["tensors"]
    assert torch.equal(student.state_dict()["conv_stem.weight"], src["conv_stem.weight"])


def test_head_missing_from_the_file_is_initialised(tmp_path):
    src = _timm("mobilenetv3_small_050", 1, 2).state_dict()
    torch.save({k: v for k, v in src.items() if not k.startswith("classifier.")}, tmp_path / "features.pt")
    info = load_student_weights(_timm("mobilenetv3_small_050", 1, 2, seed=0), tmp_path / "features.pt",
                                in_chans=1, num_classes=2)
    assert info["reinitialised"] == ["classifier.weight", "classifier.bias"]


def test_pickled_module_is_refused(tmp_path):
    torch.save(_timm("mobilenetv3_small_050", 1, 2), tmp_path / "full.pt")
    with pytest.raises(InputError, match="needs the Python object .* safe loading") as e:
        load_student_weights(_timm("mobilenetv3_small_050", 1, 2), tmp_path / "full.pt", in_chans=1, num_classes=2)
    msg = _one_line(e)
    assert "save model.state_dict() instead" in msg and "--trust-checkpoint" not in msg


def test_weights_of_another_zoo_architecture_are_named(tmp_path):
    torch.save(_timm("mobilenetv3_small_075", 3, 1000).state_dict(), tmp_path / "w.pt")
    with pytest.raises(InputError, match="do not fit timm:mobilenetv3_small_050: they look like "
                                         "timm:mobilenetv3_small_075") as e:
        load_student_weights(_timm("mobilenetv3_small_050", 1, 2), tmp_path / "w.pt", in_chans=1, num_classes=2)
    _one_line(e)


def test_weights_of_an_unknown_architecture_give_the_match_ratio(tmp_path):
    assert "efficientnet_b1" not in _GUESSES
    torch.save(_timm("efficientnet_b1", 1, 2).state_dict(), tmp_path / "w.pt")
    with pytest.raises(InputError, match=r"do not fit timm:resnet10t: only \d+ of the \d+ tensors") as e:
        load_student_weights(_timm("resnet10t", 1, 2), tmp_path / "w.pt", in_chans=1, num_classes=2)
    _one_line(e)


def test_one_wrong_shape_is_named_with_both_shapes(tmp_path):
    src = _timm("mobilenetv3_small_050", 1, 2).state_dict()
    key = "blocks.1.0.conv_pw.weight"
    src[key] = torch.zeros(src[key].shape[0] + 1, *src[key].shape[1:])
    torch.save(src, tmp_path / "w.pt")
    with pytest.raises(InputError) as e:
        load_student_weights(_timm("mobilenetv3_small_050", 1, 2), tmp_path / "w.pt", in_chans=1, num_classes=2)
    msg = _one_line(e)
    model_shape = list(_timm("mobilenetv3_small_050", 1, 2).state_dict()[key].shape)
    assert f"{key} is {list(src[key].shape)} in the file but {model_shape} in the model" in msg


def test_missing_and_unexpected_tensors(tmp_path):
    src = _timm("mobilenetv3_small_050", 1, 2).state_dict()
    partial = dict(src)
    del partial["blocks.0.0.bn1.weight"]
    torch.save(partial, tmp_path / "partial.pt")
    student = _timm("mobilenetv3_small_050", 1, 2)
    with pytest.raises(InputError, match=r"1 tensor\(s\) missing from the file \(e.g. blocks.0.0.bn1.weight\)") as e:
        load_student_weights(student, tmp_path / "partial.pt", in_chans=1, num_classes=2)
    _one_line(e)
    torch.save({**src, "aux.weight": torch.zeros(3)}, tmp_path / "extra.pt")
    with pytest.raises(InputError, match=r"1 tensor\(s\) the model does not have \(e.g. aux.weight\)"):
        load_student_weights(student, tmp_path / "extra.pt", in_chans=1, num_classes=2)


def test_non_finite_weights_are_refused(tmp_path):
    src = _timm("mobilenetv3_small_050", 1, 2).state_dict()
    src["conv_stem.weight"][0, 0, 0, 0] = float("nan")
    torch.save(src, tmp_path / "nan.pt")
    with pytest.raises(InputError, match="NaN/Inf in conv_stem.weight"):
        load_student_weights(_timm("mobilenetv3_small_050", 1, 2), tmp_path / "nan.pt", in_chans=1, num_classes=2)


@pytest.mark.parametrize("name, content, expect", [
    ("cut.pth", None, "truncated or corrupt"),
    ("noise.pt", b"\x00garbage" * 50, "truncated or corrupt"),
    ("bad.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", "not a readable safetensors file"),
])
def test_corrupt_files_are_refused(tmp_path, imagenet_lcnet, name, content, expect):
    if content is None:
        data = imagenet_lcnet[0].read_bytes()
        content = data[: len(data) // 2]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=expect) as e:
        load_student_weights(_timm("lcnet_100", 1, 2), tmp_path / name, in_chans=1, num_classes=2)
    _one_line(e)


def test_missing_file_names_the_option(tmp_path):
    with pytest.raises(InputError, match=r"student weights file .*nope.pt does not exist: check --student-weights"):
        load_student_weights(_timm("lcnet_100", 1, 2), tmp_path / "nope.pt", in_chans=1, num_classes=2)


def test_not_a_state_dict(tmp_path):
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pt")
    with pytest.raises(InputError, match="is not a state_dict"):
        load_student_weights(_timm("lcnet_100", 1, 2), tmp_path / "list.pt", in_chans=1, num_classes=2)
