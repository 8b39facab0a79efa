"""Depth pruning: whole shape-preserving blocks go, least harmful first; the student still runs and round-trips."""
from __future__ import annotations

import pytest
import torch

from edgekd.config import DistillConfig, PruneConfig
from edgekd.errors import InputError
from edgekd.models.stats import count_params
from edgekd.prune import prune
from edgekd.prune.depth import remove_blocks, removable_blocks
from edgekd.prune.serialize import load_pruned, save_pruned

from ._square import oracle_logits, square_dataset
from .test_prune import student


@pytest.fixture(scope="module")
def data():
    return square_dataset(48, 32, 16)


@pytest.fixture(scope="module")
def tl(data):
    return oracle_logits(data, 2.0)

FAST = DistillConfig(batch_size=32)


def test_only_lowest_level_shape_preserving_blocks_are_candidates():
    m = student("lcnet_050")
    names = removable_blocks(m, torch.rand(1, 1, 32, 32))
    # lcnet_050: the second block of stages 1-3 and 5 and the four blocks of stage 4 keep their shape
    assert set(names) == {"blocks.1.1", "blocks.2.1", "blocks.3.1", "blocks.4.0", "blocks.4.1", "blocks.4.2",
                          "blocks.4.3", "blocks.5.1"}
    r = student("resnet10t")  # one BasicBlock per stage; only the first keeps its width and stride
    assert removable_blocks(r, torch.rand(1, 1, 32, 32)) == ["layer1.0"]


def test_remove_blocks_replaces_the_least_harmful_and_keeps_the_original(data, tl):
    m = student("lcnet_050")
    before = sum(1 for _ in m.modules())
    slim, step = remove_blocks(m, 3, data.val.images[:64], tl.val[:64], temperature=4.0)
    assert len(step.removed) == 3 and len(set(step.removed)) == 3
    assert all(isinstance(slim.get_submodule(n), torch.nn.Identity) for n in step.removed)
    assert sum(1 for _ in m.modules()) == before  # the input model is untouched
    assert slim(data.val.images[:2]).shape == (2, 2)


def test_prune_with_depth_removes_blocks_then_channels_and_round_trips(data, tl, tmp_path):
    m = student("lcnet_050")
    res = prune(m, data, tl, PruneConfig(ratio=0.5, steps=1, depth=2), FAST,
                finetune_steps=6, recovery_steps=0)
    depth_step = res.steps[0]
    assert depth_step["kind"] == "depth" and len(depth_step["removed_blocks"]) == 2
    assert res.macs_after <= res.target_macs and res.params_after < res.params_before
    save_pruned(res.model, student("lcnet_050"), tmp_path)
    loaded = load_pruned(lambda: student("lcnet_050"), tmp_path)
    x = data.val.images[:4]
    with torch.no_grad():
        assert torch.equal(loaded(x), res.model(x))
    assert count_params(loaded) == count_params(res.model)


def test_depth_only_pruning(data, tl):
    res = prune(student("lcnet_050"), data, tl, PruneConfig(ratio=0.0, depth=1),
                FAST)
    assert [s.get("kind") for s in res.steps] == ["depth"] and res.params_after < res.params_before


@pytest.mark.parametrize("tolerance, skipped", [(2.0, True), (-2.0, False)])
def test_depth_only_pruning_skips_the_recovery_when_the_fine_tune_lost_nothing(tolerance, skipped, data, tl,
                                                                                monkeypatch):
    from edgekd.prune import pruner

    # a tolerance of 2 makes any val score "within" the unpruned one's, -2 makes none
    monkeypatch.setattr(pruner, "RECOVERY_TOLERANCE", tolerance)
    res = prune(student("lcnet_050"), data, tl, PruneConfig(ratio=0.0, depth=1), FAST, finetune_steps=2,
                recovery_steps=3)
    step = res.steps[-1]
    assert "val_auc_unpruned" in step
    assert ("recovery_skipped" in step) is skipped
    assert step["recovery_steps"] == (0 if skipped else 3)


def test_recovery_steps_asked_for_are_never_skipped(data, tl, monkeypatch):
    from edgekd.prune import pruner

    monkeypatch.setattr(pruner, "RECOVERY_TOLERANCE", 2.0)
    res = prune(student("lcnet_050"), data, tl, PruneConfig(ratio=0.0, depth=1, recovery_steps=3), FAST,
                finetune_steps=2)
    assert res.steps[-1]["recovery_steps"] == 3 and "recovery_skipped" not in res.steps[-1]


def test_channel_pruning_always_recovers(data, tl, monkeypatch):
    from edgekd.prune import pruner

    monkeypatch.setattr(pruner, "RECOVERY_TOLERANCE", 2.0)
    res = prune(student("lcnet_050"), data, tl, PruneConfig(ratio=0.3, steps=1, depth=1), FAST, finetune_steps=2,
                recovery_steps=3)
    assert res.steps[-1]["recovery_steps"] == 3 and "recovery_skipped" not in res.steps[-1]


@pytest.mark.parametrize("depth", [-1, 1.5, 65])
def test_bad_depth_is_rejected(depth, data, tl):
    with pytest.raises(InputError, match="prune depth"):
        prune(student("lcnet_050"), data, tl, PruneConfig(depth=depth), FAST)


def test_the_default_depth_removes_half_of_the_removable_blocks(data, tl):
    from edgekd.prune.depth import removable_blocks
    from edgekd.prune.pruner import auto_depth

    m = student("lcnet_050")
    n = len(removable_blocks(m, data.train.images[:1]))
    assert n >= 2 and auto_depth(m, data.train.images[:1]) == n // 2
    res = prune(m, data, tl, PruneConfig(ratio=0.0), FAST, finetune_steps=0, recovery_steps=0)
    assert PruneConfig().depth is None
    assert len(res.steps[0]["removed_blocks"]) == n // 2


class _Residual(torch.nn.Module):
    """x + convs(x): with zero weights removing it changes nothing; more 3×3 convs make it cost more."""

    def __init__(self, convs: int, scale: float):
        super().__init__()
        self.convs = torch.nn.Sequential(*[torch.nn.Conv2d(4, 4, 3, padding=1, bias=False) for _ in range(convs)])
        for c in self.convs:
            torch.nn.init.normal_(c.weight, std=scale) if scale else torch.nn.init.zeros_(c.weight)

    def forward(self, x):
        return x + self.convs(x)


def _two_block_net(cheap_scale: float, costly_scale: float) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1),
                               torch.nn.Sequential(_Residual(1, cheap_scale), _Residual(3, costly_scale)),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))


def test_by_cost_removes_the_block_that_saves_most_macs_among_harmless_ones():
    x, teacher = torch.rand(16, 1, 16, 16), torch.randn(16, 2)
    plain = remove_blocks(_two_block_net(0.0, 0.0), 1, x, teacher, temperature=1.0)[1]
    assert plain.removed == ["1.0"] and plain.macs_saved == []  # harm ties: the first block
    slim, step = remove_blocks(_two_block_net(0.0, 0.0), 1, x, teacher, temperature=1.0, by_cost=True)
    assert step.removed == ["1.1"] and step.macs_saved == [3 * 4 * 4 * 9 * 16 * 16]  # three 3×3 convs at 16×16
    assert isinstance(slim.get_submodule("1.1"), torch.nn.Identity)


def test_by_cost_still_keeps_a_block_whose_removal_harms():
    x = torch.rand(16, 1, 16, 16)
    net = _two_block_net(0.0, 1.0)  # the costly block does real work: the teacher is this very network
    with torch.no_grad():
        teacher = net(x) * 4.0
    step = remove_blocks(net, 1, x, teacher, temperature=1.0, by_cost=True)[1]
    assert step.removed == ["1.0"]


def test_the_kd_score_in_pieces_equals_one_pass_over_every_image(monkeypatch):
    import torch.nn.functional as F

    import edgekd.lower._base as lower_base
    import edgekd.prune.depth as depth

    net = _two_block_net(0.3, 0.3).eval()
    x, teacher = torch.rand(50, 1, 16, 16), torch.randn(50, 2)
    with torch.no_grad():
        whole = float(F.kl_div(F.log_softmax(net(x) / 2.0, 1), F.softmax(teacher / 2.0, 1), reduction="batchmean"))
    monkeypatch.setattr(lower_base, "PREDICT_PIXELS", 7 * 16 * 16)  # 7 images a pass: 8 passes, the last one short
    assert depth._kd_score(net, x, teacher, 2.0) == pytest.approx(whole, rel=1e-5)


def test_by_cost_scores_the_model_between_removals_once(monkeypatch):
    import edgekd.prune.depth as depth

    calls = []
    real = depth._kd_score
    monkeypatch.setattr(depth, "_kd_score", lambda m, *a: calls.append(1) or real(m, *a))
    net = _two_block_net(0.1, 0.1)
    x, teacher = torch.rand(16, 1, 16, 16), torch.randn(16, 2)
    step = remove_blocks(net, 2, x, teacher, temperature=1.0, by_cost=True)[1]
    assert len(step.removed) == 2 and len(calls) == 1 + 2 + 1  # the start, two trials, then the last block's trial
