"""The student zoo and plain classifier training: every zoo name builds and runs, init is
seeded, training learns a separable task, is reproducible, and saved weights load back."""
from __future__ import annotations

import pytest
import torch

from edgekd.data._base import Split
from edgekd.errors import InputError
from edgekd.models import STUDENTS, count_params, create_student, save_weights
from edgekd.train import random_shift, train_classifier

REQUIRED = {"mobilenetv3_small_050", "mobilenetv3_small_075", "mobilenetv3_small_100", "mobilenetv3_large_075",
            "resnet10t", "efficientnet_b0", "lcnet_050", "lcnet_075"}


def test_zoo_lists_the_edge_students():
    assert REQUIRED <= set(STUDENTS)
    assert all(isinstance(note, str) and note for note in STUDENTS.values())


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_every_student_builds_and_runs(name):
    model = create_student(name, in_chans=1, num_classes=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 64, 64))
    assert out.shape == (1, 2) and torch.isfinite(out).all()
    assert count_params(model) < 6_000_000  # edge-sized


def test_init_is_seeded_and_does_not_touch_the_global_stream():
    before = torch.random.get_rng_state()
    a = create_student("mobilenetv3_small_050", 1, 2, seed=3).state_dict()
    b = create_student("mobilenetv3_small_050", 1, 2, seed=3).state_dict()
    c = create_student("mobilenetv3_small_050", 1, 2, seed=4).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_any_timm_name_works_and_typos_get_a_suggestion():
    model = create_student("resnet18", in_chans=3, num_classes=4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(InputError, match=r"did you mean 'mobilenetv3_small_050'.*timm.list_models\(\)"):
        create_student("mobilenetv3_smal_050", 1, 2)


# ---------------------------------------------------------------- training
def _tiny_cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(8 * 16, 2),
    )


def _blobs(n: int, seed: int) -> Split:
    """Class 1 has a faint bright square in the centre of the noise; class 0 does not."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.randn(n, 1, 16, 16, generator=g)
    images[labels == 1, :, 5:11, 5:11] += 0.8
    return Split(images, labels)


def test_training_learns_a_separable_task():
    torch.manual_seed(0)
    model = _tiny_cnn()
    result = train_classifier(model, _blobs(256, 1), _blobs(128, 2), epochs=4, batch_size=32, lr=1e-2)
    assert result["epochs"] == 4 and len(result["history"]) == 4
    assert result["best_val_auc"] > 0.9
    assert result["best_val_auc"] == max(h["val_auc"] for h in result["history"])
    assert not model.training
    with torch.no_grad():  # the model holds the best epoch's weights
        from edgekd.metrics.classification import roc_auc

        val = _blobs(128, 2)
        assert roc_auc(model(val.images).numpy(), val.labels.numpy()) == pytest.approx(result["best_val_auc"])


def test_training_is_reproducible_with_the_same_seed():
    def run(seed: int) -> dict:
        torch.manual_seed(123)
        model = _tiny_cnn()
        train_classifier(model, _blobs(96, 1), _blobs(32, 2), epochs=2, batch_size=32, seed=seed)
        return model.state_dict()

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_training_rejects_bad_settings():
    with pytest.raises(InputError, match="epochs"):
        train_classifier(_tiny_cnn(), _blobs(8, 1), _blobs(4, 2), epochs=0)
    with pytest.raises(InputError, match="train"):
        train_classifier(_tiny_cnn(), _blobs(1, 1), _blobs(4, 2), epochs=1)


def test_random_shift_moves_whole_images_within_the_limit():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 12 * 12, dtype=torch.float32).reshape(2, 1, 12, 12)
    assert torch.equal(random_shift(x, 0, g), x)
    y = random_shift(x, 3, g)
    assert y.shape == x.shape
    for i in range(2):  # each output is x shifted by one (dy, dx) with |dy|, |dx| <= 3 (edges replicated)
        padded = torch.nn.functional.pad(x[i : i + 1], (3, 3, 3, 3), mode="replicate")[0]
        assert any(torch.equal(y[i], padded[:, dy : dy + 12, dx : dx + 12]) for dy in range(7) for dx in range(7))


def test_save_weights_round_trips(tmp_path):
    from safetensors.torch import load_file

    model = create_student("lcnet_050", 1, 2, seed=1)
    path = save_weights(model, tmp_path / "sub" / "w.safetensors")
    loaded = load_file(str(path))
    state = model.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, no leftovers
