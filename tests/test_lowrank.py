"""Low-rank factorization: exact at energy 1, fewer MACs below, rebuilt from JSON + state_dict, ONNX and NNCF INT8."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import edgekd  # noqa: F401  (before timm: the torchvision work-around)
from edgekd.errors import InputError
from edgekd.lowrank import (
    LowRankConfig,
    factorize,
    layer_count,
    load_lowrank,
    save_lowrank,
)
from edgekd.models import count_macs, create_student

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]

X = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))


class Plain(nn.Module):
    """k×k convs (one strided, one dilated), a 1×1 conv, a depthwise conv, two linears: every case in one net."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 64, 3, stride=2, padding=2, dilation=2, bias=False)
        self.dw = nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.pw = nn.Conv2d(64, 64, 1)
        self.fc = nn.Linear(64, 48)
        self.head = nn.Linear(48, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.relu(self.pw(self.dw(x)))
        return self.head(torch.relu(self.fc(x.mean((2, 3)))))


def _low_rank_weights(model: nn.Module, rank: int = 4) -> nn.Module:
    """Give every non-depthwise weight a rank-``rank`` structure plus a little noise (what trained weights look like)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and getattr(m, "groups", 1) == 1:
                w = m.weight.reshape(m.weight.shape[0], -1)
                r = min(rank, *w.shape)
                lr = torch.randn(w.shape[0], r, generator=g) @ torch.randn(r, w.shape[1], generator=g)
                m.weight.copy_((lr / lr.norm() * w.norm() + 1e-3 * torch.randn(w.shape, generator=g))
                               .reshape(m.weight.shape))
    return model.eval()


def _plain() -> nn.Module:
    torch.manual_seed(0)
    return _low_rank_weights(Plain())


def test_energy_one_reproduces_the_layers_outputs() -> None:
    model = _plain()
    res = factorize(model, X, LowRankConfig(energy=1.0, round_to=1, only_if_fewer_macs=False))
    names = {e["name"] for e in res.record["layers"]}
    assert names == {"c1", "c2", "pw", "fc"}  # depthwise and the classifier are left alone
    skipped = {s["name"]: s["why"] for s in res.record["skipped"]}
    assert skipped == {"dw": "depthwise", "head": "classifier"}
    for e in res.record["layers"]:
        assert e["rank"] == e["full_rank"] and e["energy_kept"] == pytest.approx(1.0)
    assert isinstance(res.model.c2, nn.Sequential) and res.model.c2[0].stride == (2, 2)
    with torch.no_grad():
        torch.testing.assert_close(res.model(X), model(X), rtol=1e-4, atol=1e-5)
    assert isinstance(model.c1, nn.Conv2d)  # the source is not modified


def test_lower_energy_lowers_macs_and_keeps_what_it_says() -> None:
    model = _plain()
    macs = count_macs(model, X)
    res = factorize(model, X, LowRankConfig(energy=0.95, round_to=1))
    rec = res.record
    assert rec["macs_before"] == macs and rec["macs_after"] == count_macs(res.model, X) < macs
    assert {e["name"] for e in rec["layers"]} >= {"c2", "pw", "fc"}
    for e in rec["layers"]:
        assert e["rank"] <= 5 and e["energy_kept"] >= 0.95  # the planted rank is 4 (+ noise)
        assert e["macs_after"] < e["macs_before"]
    with torch.no_grad():  # the weights were nearly rank 4: the factorized model is still close
        torch.testing.assert_close(res.model(X), model(X), rtol=0.05, atol=0.05)
    assert layer_count(res.model) == layer_count(model) + len(rec["layers"])
    json.dumps(rec)  # JSON as it is
    assert factorize(model, X, LowRankConfig(energy=0.95, round_to=1)).record == rec  # deterministic


def test_rank_rounding_and_layers_that_would_not_get_cheaper_are_skipped() -> None:
    model = _plain()
    res = factorize(model, X, LowRankConfig(energy=0.95, round_to=8))
    for e in res.record["layers"]:
        assert e["rank"] % 8 == 0 or e["rank"] == e["full_rank"]
    # c1 (1 input channel, 3×3: a 32×9 matrix) can never get cheaper: r·(9 + 32) >= 32·9 for r >= 8
    assert any(s["name"] == "c1" and s["why"].startswith("no MACs saved") for s in res.record["skipped"])
    fixed = factorize(model, X, LowRankConfig(energy=None, rank=8, round_to=1))
    assert all(e["rank"] == 8 for e in fixed.record["layers"])


def test_bad_config_is_one_line() -> None:
    for cfg in (LowRankConfig(energy=0.0), LowRankConfig(energy=1.5), LowRankConfig(energy=None),
                LowRankConfig(energy=0.9, rank=4), LowRankConfig(energy=None, rank=0)):
        with pytest.raises(InputError) as e:
            factorize(_plain(), X, cfg)
        assert "\n" not in str(e.value)


def test_rebuild_from_record_and_state_dict(tmp_path) -> None:
    model = _plain()
    res = factorize(model, X, LowRankConfig(energy=0.95, round_to=1))
    save_lowrank(res.model, res.record, tmp_path)
    loaded = load_lowrank(_plain, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), res.model(X), rtol=0, atol=0)
    # a record that does not fit the model it is applied to says which layer
    rec = json.loads((tmp_path / "lowrank.structure.json").read_text())
    rec["layers"][0]["in_features"] += 1
    (tmp_path / "lowrank.structure.json").write_text(json.dumps(rec))
    with pytest.raises(InputError, match=rec["layers"][0]["name"]):
        load_lowrank(_plain, tmp_path)


@pytest.fixture(scope="module")
def square():
    from ._square import oracle_logits, square_dataset

    data = square_dataset(256, 128, 32)
    return data, oracle_logits(data, 3.0)


@pytest.fixture(scope="module")
def student(square) -> tuple[nn.Module, nn.Module]:
    """A small timm student (lcnet_050: 3×3 stem, 1×1 pointwise convs, 1×1 head conv), trained a little, and its
    factorized copy (trained weights: BatchNorm statistics that carry a signal, a spectrum that decays)."""
    from edgekd.config import DistillConfig
    from edgekd.distill import distill

    data, tl = square
    m = create_student("lcnet_050", 1, 2, seed=0)
    m = distill(m, data, tl, DistillConfig(batch_size=32, lr=3e-3), steps=24).model.eval()
    res = factorize(m, X, LowRankConfig(energy=0.9, round_to=1))
    assert len(res.record["layers"]) >= 5, res.record["skipped"]
    return m, res.model


def test_timm_student_rebuilds_through_a_pruned_base(student, tmp_path) -> None:
    from edgekd.prune.serialize import load_pruned, save_pruned

    base, lr = student
    save_pruned(base, create_student("lcnet_050", 1, 2, seed=0), tmp_path, stem="pruned")  # the unpruned case
    save_lowrank(lr, factorize(base, X, LowRankConfig(energy=0.9, round_to=1)).record, tmp_path)
    rebuilt = load_lowrank(lambda: load_pruned(lambda: create_student("lcnet_050", 1, 2, seed=0), tmp_path), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(X), lr(X), rtol=0, atol=0)


def test_onnx_export_matches_torch(student, tmp_path) -> None:
    from edgekd.lower.onnx import OnnxRuntimeRunner, count_ops, export_onnx

    base, lr = student
    path = export_onnx(lr, X, tmp_path / "lowrank.onnx")
    assert count_ops(path)["Conv"] > sum(1 for m in base.modules() if isinstance(m, nn.Conv2d))
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = lr(x).numpy()
    got = OnnxRuntimeRunner(path, threads=1)(x.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_nncf_int8_runs_and_exports(student, square, tmp_path) -> None:
    from edgekd.lower.onnx import OnnxRuntimeRunner, count_ops, export_onnx
    from edgekd.quantize import quantize_ptq, strip_for_export

    data, _ = square
    _, lr = student
    q = quantize_ptq(lr, data.train.images[:32])
    val = data.val.images
    with torch.no_grad():
        fp, qq = lr(val).numpy(), q(val).numpy()
    assert fp.std() > 1e-2  # a signal to quantize
    assert (fp.argmax(1) == qq.argmax(1)).mean() >= 0.9
    path = export_onnx(strip_for_export(q, X), X, tmp_path / "lowrank-int8.onnx")
    assert count_ops(path).get("QuantizeLinear", 0) > 0
    ort = OnnxRuntimeRunner(path, threads=1, precision="int8")(val.numpy())
    assert (ort.argmax(1) == qq.argmax(1)).mean() >= 0.9
