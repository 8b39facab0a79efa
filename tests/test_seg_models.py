"""Segmentation students and smp teachers: build, shapes, sizes, seeds, weights, one-line errors."""
from __future__ import annotations

import pytest
import torch

from edgekd.errors import InputError, TeacherError
from edgekd.models.segmentation import (
    SEG_STUDENTS,
    check_seg_size,
    check_seg_teacher,
    create_seg_student,
    create_seg_teacher,
    load_seg_teacher,
    parse_seg_teacher_spec,
)
from edgekd.models.stats import count_macs

SMALL_TEACHER = "smp:Unet:tu-mobilenetv3_small_050"  # an smp teacher that builds in a blink


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text, text
    return text


@pytest.fixture(scope="module")
def teacher_macs_64() -> int:
    """MACs of U-Net ResNet-34 (smp's default decoder) at 64×64; convolutional, so ratios hold at any size."""
    return count_macs(create_seg_teacher("Unet", "resnet34", 1, 2), torch.zeros(1, 1, 64, 64))


@pytest.mark.parametrize("name", sorted(SEG_STUDENTS))
def test_every_student_builds_and_is_ten_times_cheaper_than_the_teacher(name, teacher_macs_64):
    model = create_seg_student(name, 1, 2, seed=0)
    assert model.training
    x = torch.zeros(1, 1, 64, 64)
    with torch.no_grad():
        assert model.eval()(x).shape == (1, 2, 64, 64)
    assert teacher_macs_64 / count_macs(model, x) >= 10.0, name
    head = model.segmentation_head[0]
    assert head.out_channels == 2


@pytest.mark.parametrize("hw", [(64, 64), (65, 64), (63, 47), (7, 9)])
def test_a_unet_student_returns_logits_of_the_input_size_at_any_size(hw):
    model = create_seg_student("unet-mobilenetv3_small_050", 3, 4).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, *hw)).shape == (2, 4, *hw)
    check_seg_size(model, *hw)  # a U-Net takes any size: nothing to say


def test_an_fpn_teacher_needs_multiples_of_32_and_the_error_names_the_sizes():
    fpn = create_seg_teacher("fpn", "tu-mobilenetv3_small_050", 1, 2).eval()
    check_seg_size(fpn, 64, 96)
    with pytest.raises(InputError) as e:
        check_seg_size(fpn, 100, 64)
    assert "32" in _one_line(e) and "96 or 128" in str(e.value)
    with pytest.raises(RuntimeError, match="divisible by 32"):  # the model's own check agrees
        fpn(torch.zeros(1, 1, 100, 64))
    with pytest.raises(InputError):
        check_seg_size(fpn, 0, 64)


def test_a_student_is_seeded_without_touching_the_callers_random_stream():
    before = torch.random.get_rng_state()
    a = create_seg_student("unet-lcnet_050", 1, 2, seed=3).state_dict()
    assert torch.equal(before, torch.random.get_rng_state())
    b = create_seg_student("unet-lcnet_050", 1, 2, seed=3).state_dict()
    c = create_seg_student("unet-lcnet_050", 1, 2, seed=4).state_dict()
    w = "segmentation_head.0.weight"
    assert torch.equal(a[w], b[w]) and not torch.equal(a[w], c[w])


def test_any_timm_encoder_smp_accepts_works_and_one_it_rejects_fails_in_one_line():
    model = create_seg_student("unet-resnet10t", 1, 2).eval()
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(InputError) as e:
        create_seg_student("unet-vit_tiny_patch16_224", 1, 2)  # no 2,4,8,16,32 feature pyramid
    assert "choose another encoder" in _one_line(e)


@pytest.mark.parametrize("call, error, hint", [
    (lambda: create_seg_student("unet-mobilenetv3_smal_050", 1, 2), InputError, "unet-mobilenetv3_small_050"),
    (lambda: create_seg_student("unet-lcnet_050", 1, 1), InputError, ">= 2 classes"),
    (lambda: create_seg_student("unet-lcnet_050", 0, 2), InputError, ">= 1 input channels"),
    (lambda: create_seg_teacher("Unett", "resnet34", 1, 2), TeacherError, "'Unet'"),
    (lambda: create_seg_teacher("Unet", "resnet35", 1, 2), TeacherError, "did you mean"),
    (lambda: create_seg_teacher("Unet", "tu-mobilenetv3_smal_050", 1, 2), TeacherError, "mobilenetv3_small_050"),
    (lambda: parse_seg_teacher_spec("smp:Unet"), TeacherError, "smp:Unet:resnet34"),
    (lambda: parse_seg_teacher_spec("timm:Unet:resnet34"), TeacherError, "smp:<Arch>:<encoder>"),
    (lambda: load_seg_teacher(SMALL_TEACHER, None, in_chans=1, num_classes=2), TeacherError, "--teacher-weights"),
])
def test_bad_names_fail_in_one_line_with_the_fix(call, error, hint):
    with pytest.raises(error) as e:
        call()
    assert hint in _one_line(e)


def test_spec_parsing_keeps_arch_and_encoder():
    assert parse_seg_teacher_spec("smp:Unet:resnet34") == ("Unet", "resnet34")
    assert parse_seg_teacher_spec("smp:DeepLabV3Plus:tu-efficientnet_b0") == ("DeepLabV3Plus", "tu-efficientnet_b0")


def test_the_resnet34_unet_teacher_gives_pixel_logits():
    model = create_seg_teacher("unet", "resnet34", 1, 3).eval()
    assert type(model).__name__ == "Unet"
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_teacher_weights_round_trip_and_the_teacher_checks_the_data(tmp_path, suffix):
    torch.manual_seed(1)
    arch, encoder = parse_seg_teacher_spec(SMALL_TEACHER)
    trained = create_seg_teacher(arch, encoder, 1, 2).eval()
    path = tmp_path / f"teacher{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    else:
        torch.save(trained.state_dict(), path)
    teacher = load_seg_teacher(SMALL_TEACHER, path, in_chans=1, num_classes=2)
    assert teacher.format == "smp" and not teacher.module.training and teacher.sha256
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(teacher.logits(x, batch_size=2), trained(x), atol=1e-6)
    check_seg_teacher(teacher, 1, 2, (64, 64))
    with pytest.raises(TeacherError) as e:
        check_seg_teacher(teacher, 1, 3, (64, 64))
    assert "3" in _one_line(e)
    with pytest.raises(TeacherError) as e:  # weights for 2 classes, data with 3
        load_seg_teacher(SMALL_TEACHER, path, in_chans=1, num_classes=3)
    assert "2 classes but the data has 3" in _one_line(e)
    with pytest.raises(TeacherError) as e:  # weights of another encoder
        load_seg_teacher("smp:Unet:tu-lcnet_050", path, in_chans=1, num_classes=2)
    assert "another architecture or encoder" in _one_line(e)
