"""Teacher loading: every format round-trips to the source model's logits; every bad input
fails with a TeacherError whose one line says what is wrong and how to fix it."""
from __future__ import annotations

import pytest
import torch

from edgekd._compat import import_timm
from edgekd._io import sha256_file
from edgekd.errors import TeacherError
from edgekd.models import Teacher, load_teacher, save_weights

pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
    pytest.mark.filterwarnings("ignore:The feature will be removed"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace"),
]

ARCH = "resnet10t"
SIZE = 32


def _timm_model(in_chans: int = 1, num_classes: int = 2) -> torch.nn.Module:
    timm = import_timm()
    torch.manual_seed(0)
    return timm.create_model(ARCH, pretrained=False, in_chans=in_chans, num_classes=num_classes).eval()


def _export_onnx(module: torch.nn.Module, example: torch.Tensor, path, dynamic_batch: bool = True):
    axes = {"input": {0: "n"}, "logits": {0: "n"}} if dynamic_batch else None
    torch.onnx.export(module, (example,), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes=axes, dynamo=False, opset_version=17)
    return path


def _truncate(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _timm_model()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(5, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference(model, images) -> torch.Tensor:
    with torch.no_grad():
        return model(images)


@pytest.fixture(scope="module")
def files(tmp_path_factory, model, images):
    """One file per format, all from the same source model."""
    d = tmp_path_factory.mktemp("teachers")
    x2 = images[:2]
    torch.jit.trace(model, x2).save(str(d / "scripted.pt"))
    torch.export.save(torch.export.export(model, (x2,)), str(d / "exported.pt2"))
    torch.save(model, d / "full.pt")
    torch.save(model.state_dict(), d / "state.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, d / "wrapped.pth")
    save_weights(model, d / "weights.safetensors")
    _export_onnx(model, x2, d / "model.onnx")
    _export_onnx(model, images[:1], d / "batch1.onnx", dynamic_batch=False)
    return d


def _load(spec, **kw) -> Teacher:
    kw.setdefault("in_chans", 1)
    kw.setdefault("num_classes", 2)
    return load_teacher(str(spec), **kw)


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize(
    "name, fmt",
    [("model.onnx", "onnx"), ("batch1.onnx", "onnx"), ("scripted.pt", "torchscript"), ("exported.pt2", "torch.export")],
)
def test_file_formats_give_the_source_logits(files, images, reference, name, fmt):
    teacher = _load(files / name)
    assert teacher.format == fmt
    assert teacher.sha256 == sha256_file(files / name)
    assert teacher.path == files / name
    out = teacher.logits(images, batch_size=2)  # 5 images: a short last batch, padded when the batch is fixed
    assert out.dtype == torch.float32 and out.shape == (5, 2)
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
    teacher.check(1, 2, (SIZE, SIZE))


def test_onnx_teacher_keeps_its_file_and_no_module(files):
    teacher = _load(files / "model.onnx")
    assert teacher.onnx_path == files / "model.onnx" and teacher.module is None
    assert teacher.input_shape == (None, 1, SIZE, SIZE)


@pytest.mark.parametrize("weights", ["state.pt", "wrapped.pth", "weights.safetensors"])
def test_timm_with_weights_gives_the_source_logits(files, images, reference, weights):
    teacher = _load(f"timm:{ARCH}", weights=files / weights)
    assert teacher.format == "timm" and teacher.path == files / weights
    assert teacher.sha256 == sha256_file(files / weights)
    assert not teacher.module.training
    torch.testing.assert_close(teacher.logits(images), reference, atol=1e-5, rtol=1e-5)


def test_pickled_module_needs_trust(files, images, reference):
    with pytest.raises(TeacherError, match="is a pickle that needs .*can run arbitrary code.*--trust-checkpoint"):
        _load(files / "full.pt")
    teacher = _load(files / "full.pt", trust_checkpoint=True)
    assert teacher.format == "pickle"
    torch.testing.assert_close(teacher.logits(images), reference)


@pytest.mark.parametrize("name", ["state.pt", "weights.safetensors"])
def test_state_dict_as_teacher_file_points_to_timm(files, name):
    with pytest.raises(TeacherError, match=r"state_dict without an architecture: use --teacher timm:<arch> --teacher-weights"):
        _load(files / name)


# ---------------------------------------------------------------- broken files
@pytest.mark.parametrize("name", ["model.onnx", "state.pt", "full.pt", "scripted.pt", "exported.pt2"])
def test_truncated_files_are_refused(files, tmp_path, name):
    broken = _truncate(files / name, tmp_path / name)
    with pytest.raises(TeacherError, match="truncated or corrupt") as err:
        _load(broken, trust_checkpoint=True)
    assert "\n" not in str(err.value)


def test_truncated_weights_are_refused(files, tmp_path):
    for name in ["state.pt", "weights.safetensors"]:
        broken = _truncate(files / name, tmp_path / name)
        with pytest.raises(TeacherError, match=str(broken.name)):
            _load(f"timm:{ARCH}", weights=broken)


def test_missing_file(tmp_path):
    with pytest.raises(TeacherError, match="does not exist"):
        _load(tmp_path / "nope.onnx")
    with pytest.raises(TeacherError, match="does not exist"):
        _load(f"timm:{ARCH}", weights=tmp_path / "nope.pt")


def test_timm_without_weights_and_weights_without_timm(files):
    with pytest.raises(TeacherError, match="needs --teacher-weights"):
        _load(f"timm:{ARCH}")
    with pytest.raises(TeacherError, match="only used with --teacher timm"):
        _load(files / "model.onnx", weights=files / "state.pt")


# ---------------------------------------------------------------- not a classifier
class _Rank3(torch.nn.Module):
    def forward(self, x):
        return x.flatten(2)


class _Vector(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(x)


def test_onnx_rank3_output_is_not_a_classifier(tmp_path):
    path = _export_onnx(_Rank3(), torch.randn(1, 1, 4, 4), tmp_path / "seg.onnx")
    with pytest.raises(TeacherError, match="not a classifier.*logits output"):
        _load(path)


def test_onnx_vector_input_is_not_a_classifier(tmp_path):
    path = _export_onnx(_Vector(), torch.randn(1, 8), tmp_path / "mlp.onnx")
    with pytest.raises(TeacherError, match="not a classifier.*image input"):
        _load(path)


# ---------------------------------------------------------------- mismatches with the data
def test_timm_weights_for_other_classes_and_channels(tmp_path):
    three_classes = tmp_path / "c3.pt"
    torch.save(_timm_model(1, 3).state_dict(), three_classes)
    with pytest.raises(TeacherError, match="classifier has 3 outputs but the data has 2 classes"):
        _load(f"timm:{ARCH}", weights=three_classes)
    rgb = tmp_path / "rgb.pt"
    torch.save(_timm_model(3, 2).state_dict(), rgb)
    with pytest.raises(TeacherError, match=r"conv1\.0 expects 3 input channels but the data has 1"):
        _load(f"timm:{ARCH}", weights=rgb)


def test_timm_weights_of_another_architecture(files):
    with pytest.raises(TeacherError, match="different architecture.*missing"):
        _load("timm:mobilenetv3_small_050", weights=files / "state.pt")


def test_onnx_for_other_channels_classes_and_size(tmp_path):
    rgb = _export_onnx(_timm_model(3, 2), torch.randn(1, 3, SIZE, SIZE), tmp_path / "rgb.onnx")
    with pytest.raises(TeacherError, match="expects 3 input channels but the data has 1"):
        _load(rgb)
    c3 = _export_onnx(_timm_model(1, 3), torch.randn(1, 1, SIZE, SIZE), tmp_path / "c3.onnx")
    with pytest.raises(TeacherError, match="classifier has 3 outputs but the data has 2 classes"):
        _load(c3)
    big = _export_onnx(_timm_model(1, 2), torch.randn(1, 1, 64, 64), tmp_path / "big.onnx")
    teacher = _load(big)
    with pytest.raises(TeacherError, match="teacher expects 64×64, data is 32×32: pass --image-size 64"):
        teacher.check(1, 2, (SIZE, SIZE))


def test_check_catches_channels_size_and_nan_from_torch_teachers(files, tmp_path):
    with pytest.raises(TeacherError, match="expects 1 input channel but the data has 3"):
        _load(files / "scripted.pt").check(3, 2, (SIZE, SIZE))
    with pytest.raises(TeacherError, match="pass --image-size 32"):
        _load(files / "exported.pt2").check(1, 2, (16, 16))
    broken = _timm_model()
    with torch.no_grad():
        broken.fc.weight.fill_(float("nan"))
    torch.jit.trace(broken, torch.zeros(2, 1, SIZE, SIZE)).save(str(tmp_path / "nan.pt"))
    with pytest.raises(TeacherError, match="NaN/Inf"):
        _load(tmp_path / "nan.pt").check(1, 2, (SIZE, SIZE))
    with pytest.raises(TeacherError, match="classifier has 2 outputs but the data has 3 classes"):
        _load(files / "scripted.pt", num_classes=3).check(1, 3, (SIZE, SIZE))


def test_unknown_timm_arch_suggests_a_name(files):
    with pytest.raises(TeacherError, match="unknown timm architecture.*did you mean 'mobilenetv3_small_050'"):
        _load("timm:mobilenetv3_smal_050", weights=files / "state.pt")


# ---------------------------------------------------------------- safe loading and limits
def test_pickle_refusal_names_what_it_needs_and_the_flag(files, tmp_path):
    import argparse

    with pytest.raises(TeacherError) as err:
        _load(files / "full.pt")
    msg = str(err.value)
    assert "timm.models.resnet.ResNet" in msg and "weights_only=True" in msg and "--trust-checkpoint" in msg and "\n" not in msg
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"state_dict": torch.load(files / "state.pt"), "args": argparse.Namespace(lr=0.1)}, ckpt)
    with pytest.raises(TeacherError, match="needs the Python object argparse.Namespace.*--trust-checkpoint"):
        _load(f"timm:{ARCH}", weights=ckpt)
    assert _load(f"timm:{ARCH}", weights=ckpt, trust_checkpoint=True).format == "timm"


@pytest.mark.parametrize("name", ["model.onnx", "state.pt", "full.pt", "scripted.pt", "exported.pt2", "weights.safetensors"])
def test_files_over_the_size_limit_are_refused_before_reading(files, monkeypatch, name):
    monkeypatch.setenv("EDGEKD_MAX_MODEL_MB", "1")  # resnet10t weighs ~19 MiB
    spec, kw = (f"timm:{ARCH}", {"weights": files / name}) if name.endswith(("state.pt", ".safetensors")) else (files / name, {})
    with pytest.raises(TeacherError, match=r"MiB, over the 1\.0 MiB limit.*EDGEKD_MAX_MODEL_MB"):
        _load(spec, trust_checkpoint=True, **kw)


def test_onnx_failing_the_checker_is_refused_with_its_reason(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph([helper.make_node("Add", ["x", "ghost"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(tmp_path / "bad.onnx"))
    with pytest.raises(TeacherError, match=r"not a valid ONNX model \(onnx\.checker: .*ghost"):
        _load(tmp_path / "bad.onnx")
