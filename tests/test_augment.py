"""Consistent augmented distillation: the teacher answers for exactly the view the student sees."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd.distill.augment import Augmenter
from edgekd.distill.source import Pool, build_signal, cached_view_count, choose_mode, make_views, step_seed
from edgekd.errors import InputError


class RecordingTeacher:
    """A teacher that remembers every image it was asked about, and answers with its pixel mean."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-m, m], dim=1)


def images(n: int = 12, c: int = 1, size: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g) * 2 - 1  # normalised with mean 0.5, std 0.5


def medical(c: int = 1, **kw) -> Augmenter:
    return Augmenter("medical", mean=(0.5,), std=(0.5,), channels=c, **kw)


def test_a_view_is_random_but_fixed_by_its_seed():
    x = images()
    a = medical()
    v1, v2, v3 = a(x, seed=1).images, a(x, seed=1).images, a(x, seed=2).images
    assert torch.equal(v1, v2)
    assert not torch.allclose(v1, v3)
    assert not torch.allclose(v1, x)
    assert v1.shape == x.shape and v1.dtype == x.dtype


def test_views_stay_in_the_pixel_range_and_keep_the_image_recognisable():
    x = images(size=32)
    v = medical()(x, seed=3).images
    assert v.min() >= -1 - 1e-6 and v.max() <= 1 + 1e-6  # [0, 1] pixels under mean 0.5, std 0.5
    # small changes: each view stays far closer to its own image than to another one
    own = (v - x).flatten(1).norm(dim=1)
    other = (v - x.roll(1, 0)).flatten(1).norm(dim=1)
    assert (own < other).float().mean() >= 0.9


def test_no_flips_unless_allowed():
    x = torch.zeros(64, 1, 16, 16)
    x[..., :, :4] = 1.0  # a bright left border
    left = lambda v: v[..., :, :4].mean(dim=(1, 2, 3))  # noqa: E731
    right = lambda v: v[..., :, -4:].mean(dim=(1, 2, 3))  # noqa: E731
    plain = Augmenter("medical", mean=(0.0,), std=(1.0,), channels=1)(x, seed=0).images
    assert (left(plain) > right(plain)).all()
    flipped = Augmenter("medical", mean=(0.0,), std=(1.0,), channels=1, flips=True)(x, seed=0).images
    assert (left(flipped) < right(flipped)).any()
    assert "horizontal flip" not in " ".join(medical().describe()["ops"])


def test_mixup_mixes_pairs_with_recorded_weights():
    x = images(n=16)
    a = Augmenter("none", mean=(0.5,), std=(0.5,), channels=1, mixup=1.0)
    m = a(x, seed=5)
    assert not torch.equal(m.partner, torch.arange(16))
    lam = m.lam.view(-1, 1, 1, 1)
    assert torch.allclose(m.images, lam * x + (1 - lam) * x[m.partner], atol=1e-6)


def test_rgb_views_use_per_channel_normalisation():
    x = images(c=3)
    a = Augmenter("medical", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), channels=3)
    assert a(x, seed=0).images.shape == x.shape


def test_online_teacher_sees_exactly_the_batch_the_student_trains_on():
    pool = Pool.of(images(), torch.arange(12) % 2)
    teacher = RecordingTeacher()
    sig = build_signal("online", pool, images(n=4, seed=9), teacher, medical(mixup=0.5), views=0, seed=0)
    teacher.seen.clear()
    b = sig.batch(torch.tensor([0, 3, 5, 7]), step_seed(0, 1))
    assert len(teacher.seen) == 1
    assert torch.equal(teacher.seen[0], b.images)  # not the clean images: the very view
    assert not torch.allclose(b.images, pool.images[[0, 3, 5, 7]])
    assert torch.allclose(b.teacher, teacher(b.images))


def test_cached_views_pair_each_stored_image_with_the_teachers_answer_for_it(tmp_path):
    pool = Pool.of(images(n=10), torch.arange(10) % 2)
    teacher = RecordingTeacher()
    sig = build_signal("cached", pool, images(n=4, seed=9), teacher, medical(mixup=0.5), views=3, seed=0,
                       folder=tmp_path)
    assert sig.views.shape == (3, 10, 1, 24, 24) and sig.views.dtype == np.uint8
    b = sig.batch(torch.arange(10), seed=11)
    # the student's batch, given to the teacher again, gives the cached logits: same images, same answers
    assert torch.allclose(teacher(b.images), b.teacher, atol=1e-5)
    assert not torch.allclose(b.images, pool.images, atol=0.05)  # augmented, not the clean images
    assert {p.name for p in tmp_path.iterdir()} == {"views.npy", "view_logits.npy", "view_partner.npy", "view_lam.npy"}


def test_cached_views_are_reproducible_from_the_seed():
    pool = Pool.of(images(n=6), torch.arange(6) % 2)
    mean, std = torch.full((1, 1, 1, 1), 0.5), torch.full((1, 1, 1, 1), 0.5)
    a = make_views(pool, RecordingTeacher(), medical(mixup=0.5), 2, 0, mean, std)
    b = make_views(pool, RecordingTeacher(), medical(mixup=0.5), 2, 0, mean, std)
    c = make_views(pool, RecordingTeacher(), medical(mixup=0.5), 2, 1, mean, std)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["views"], c["views"])


def test_unlabelled_images_join_the_pool_without_labels():
    pool = Pool.of(images(n=4), torch.tensor([0, 1, 0, 1]), images(n=3, seed=4))
    assert len(pool) == 7 and pool.labelled == 4
    assert pool.labels.tolist() == [0, 1, 0, 1, -1, -1, -1]


def test_mode_choice_is_deterministic_and_explained():
    # a few hundred images for many steps on a CPU: label cached views once
    mode, why = choose_mode("auto", augment=True, n_pool=550, steps=1500, batch_size=64, views=32)
    assert mode == "cached" and "cached views" in why
    # the budget covers fewer passes than a cache would: online costs no more
    assert choose_mode("auto", augment=True, n_pool=50_000, steps=1500, batch_size=64, views=4)[0] == "online"
    assert choose_mode("auto", augment=True, n_pool=550, steps=1500, batch_size=64, views=32, device="cuda")[0] == "online"
    assert choose_mode("cached", augment=False, n_pool=550, steps=10, batch_size=64, views=4)[0] == "plain"
    # 50 000 gray 224×224 images: one view is 2.3 GiB, over the 2 GiB cache built in memory -> online
    mode, why = choose_mode("auto", augment=True, n_pool=50_000, steps=100_000, batch_size=64, views=1,
                            view_bytes=224 * 224)
    assert mode == "online" and "2.3 GiB" in why
    assert choose_mode("auto", augment=True, n_pool=5_000, steps=100_000, batch_size=64, views=1,
                       view_bytes=224 * 224)[0] == "cached"


def test_view_count_follows_the_budget_and_the_memory_cap():
    assert cached_view_count(550, 1500, 64, 4096, None) == 32  # 175 passes: the most views
    assert cached_view_count(5000, 1500, 64, 4096, None) == 5  # 19 passes, ~4 per view
    assert cached_view_count(100_000, 1500, 64, 3 * 224 * 224, None) <= 14  # 2 GiB cap
    assert cached_view_count(550, 1500, 64, 4096, 7) == 7


@pytest.mark.parametrize("kw", [{"name": "strong"}, {"mixup": 1.5}, {"mixup": -0.1}])
def test_bad_augmentation_settings_are_one_clear_error(kw):
    args = {"name": "medical", "mixup": 0.0, **kw}
    with pytest.raises(InputError):
        Augmenter(args["name"], mean=(0.5,), std=(0.5,), channels=1, mixup=args["mixup"])


# ---------------------------------------------------------------- feature distillation (--feature-kd)
def test_feature_hint_trains_the_adapter_and_leaves_the_student_exportable():
    from edgekd._compat import import_timm
    from edgekd.distill.features import FeatureHint

    timm = import_timm()
    teacher = timm.create_model("resnet10t", pretrained=False, in_chans=1, num_classes=2).eval()
    student = timm.create_model("lcnet_050", pretrained=False, in_chans=1, num_classes=2)
    x = images(n=8, size=32)
    hint = FeatureHint.between(student, teacher, x)
    with torch.no_grad():
        tf = teacher.forward_features(x)
    opt = torch.optim.SGD(list(hint.parameters()) + list(student.parameters()), lr=0.5)
    losses = []
    for _ in range(15):
        loss = hint.loss(student.forward_features(x), tf)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0]  # the hint is learnable: features move toward the teacher's
    assert student(x).shape == (8, 2)  # the adapter is not part of the student


def test_feature_kd_needs_a_timm_teacher_and_runs_it_online():
    from edgekd.distill.features import check_feature_kd

    with pytest.raises(InputError, match="timm torch module"):
        check_feature_kd(1.0, None)
    with pytest.raises(InputError, match=r"\[0, 100\]"):
        check_feature_kd(-1.0, None)
    check_feature_kd(0.0, None)  # off: any teacher
    assert choose_mode("cached", augment=True, n_pool=550, steps=1500, batch_size=64, views=32, features=True)[0] == "online"


def test_online_feature_batches_carry_the_teachers_features_for_the_same_view():
    from edgekd._compat import import_timm

    teacher = import_timm().create_model("resnet10t", pretrained=False, in_chans=1, num_classes=2).eval()
    pool = Pool.of(images(n=6, size=32), torch.arange(6) % 2)
    sig = build_signal("online", pool, images(n=4, size=32, seed=3), lambda x: teacher(x).detach(), medical(),
                       views=0, seed=0)
    sig.feature_module = teacher
    b = sig.batch(torch.arange(6), seed=4)
    with torch.no_grad():
        assert torch.allclose(b.features, teacher.forward_features(b.images), atol=1e-5)
        assert torch.allclose(b.teacher, teacher(b.images), atol=1e-5)
