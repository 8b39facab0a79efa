"""What ``edgekd train-teacher`` writes: the weights, the ONNX file checked against torch, the report.

``report.json`` (schema below), ``report.md`` (the same numbers as text) and ``training_curve.png``
(val AUC, val and train loss per evaluation, the phase boundary and the selected step).

report.json: ``schema``, ``command``, ``arch``, ``weights`` {source ("file" | "from scratch"),
path, sha256, notes}, ``data`` {path, format, sha256, splits, image_size, channels, num_classes,
class_names}, ``preprocessing``, ``training`` {budget, phases, augmentation, device, seed,
steps_run, stopped_early, stopped_phases, best_step, best_phase, seconds, history}, ``metrics`` {val, test}
(each: auc, auc_ci (95 % percentile bootstrap, ``seed``), accuracy, sensitivity, specificity at
Youden's J on val, ece), ``onnx`` {file, opset, agreement (vs torch on the test images)},
``files`` {name: sha256}, ``config``, ``versions``, ``seconds``.
"""
from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

SCHEMA = 1
OPSET = 17
WEIGHTS, ONNX, CURVE = "teacher.safetensors", "teacher.onnx", "training_curve.png"


def write_outputs(folder: Path, cfg, data, model: torch.nn.Module, res, *, weights: dict, budget: dict, phases: list,
                  augmentation: dict, device: str, train_seconds: float, started: float,
                  log: Callable[[str], None]) -> dict:
    """Write every file of ``--out`` into ``folder`` (the staging folder); returns the report."""
    from .._io import sha256_file, write_json_atomic
    from ..lower.onnx import OnnxRuntimeRunner, export_onnx
    from ..lower.validate import check_agreement
    from ..metrics.classification import evaluate_logits
    from ..models import save_weights
    from ..models.predict import predict_logits

    folder = Path(folder)
    meta = {"arch": cfg.arch, "in_chans": str(data.channels), "num_classes": str(data.num_classes),
            "format": "timm state_dict"}
    save_weights(model, folder / WEIGHTS, metadata=meta)

    val_logits = predict_logits(model, data.val.images).numpy()
    test_logits = predict_logits(model, data.test.images).numpy()  # test: once, on the selected weights
    yv, yt = data.val.labels.numpy(), data.test.labels.numpy()
    test = evaluate_logits(test_logits, yt, val_logits, yv, seed=cfg.seed).to_dict()
    val = evaluate_logits(val_logits, yv, val_logits, yv, seed=cfg.seed).to_dict()
    for m in (test, val):
        m.pop("val_auc", None), m.pop("val_sensitivity", None)
    log(f"metrics: val AUC {_auc(val)}, test AUC {_auc(test)}")

    export_onnx(model, data.test.images[:1], folder / ONNX, opset=OPSET)
    onnx_logits = OnnxRuntimeRunner(folder / ONNX, threads=max(1, torch.get_num_threads()))(data.test.images.numpy())
    agreement = check_agreement("teacher.onnx (ONNX Runtime fp32)", test_logits, onnx_logits, precision="fp32")
    log(f"onnx: {ONNX} matches torch on the {agreement.n} test images: {agreement.summary()}")

    history = res.history
    plot_curve(history, phases, res.best_step, folder / CURVE, title=f"timm:{cfg.arch}")

    report = {
        "schema": SCHEMA,
        "command": "train-teacher",
        "arch": cfg.arch,
        "weights": weights,
        "data": {"path": str(cfg.data), "format": data.format, "sha256": data.sha256, "splits": data.split_sizes(),
                 "image_size": list(data.image_size), "channels": data.channels, "num_classes": data.num_classes,
                 "class_names": list(data.class_names), "max_samples": cfg.max_samples},
        "preprocessing": data.preprocessing.to_dict(),
        "training": {"budget": budget, "phases": [asdict(p) for p in phases], "augmentation": augmentation,
                     "device": device, "seed": cfg.seed, "steps_run": res.steps_run, "stopped_early": res.stopped_early,
                     "stopped_phases": res.stopped_phases,
                     "best_step": res.best_step, "best_phase": res.best_phase, "seconds": round(train_seconds, 2),
                     "selection": "highest val AUC (val accuracy when undefined), ties to the lower val loss",
                     "history": history},
        "metrics": {"val": val, "test": test, "chosen_on": "val", "test_evaluated": "once, on the selected weights"},
        "onnx": {"file": ONNX, "opset": OPSET, "agreement": agreement.to_dict()},
        "config": cfg.to_dict(),
        "versions": _versions(),
    }
    report["files"] = {name: sha256_file(folder / name) for name in (WEIGHTS, ONNX, CURVE)}
    report["seconds"] = round(time.perf_counter() - started, 2)
    write_json_atomic(folder / "report.json", report)
    (folder / "report.md").write_text(markdown(report))
    return report


def _stopped(t: dict) -> str:
    return f"early stopping ended the {' and '.join(t['stopped_phases'])} phase; " if t["stopped_phases"] else ""


def _auc(m: dict) -> str:
    ci = m.get("auc_ci")
    return f"{m['auc']:.4f}" + (f" (95 % CI {ci[0]:.4f} … {ci[1]:.4f})" if ci else "")


def _versions() -> dict:
    from .._compat import import_timm

    out = {"python": platform.python_version(), "torch": torch.__version__, "timm": import_timm().__version__}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover - the ONNX check above needs it
        pass
    return out


def plot_curve(history: list[dict], phases: list, best_step: int, path: Path, *, title: str) -> Path:
    """Val AUC (left axis), val and train loss (right axis) per evaluation; phase boundary and selection marked."""
    from ..report.plots import _plt

    plt = _plt()
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(steps, [h["val_auc"] for h in history], "o-", color="#1f77b4", ms=3, label="val AUC")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("val AUC")
    ax2 = ax.twinx()
    ax2.plot(steps, [h["val_loss"] for h in history], "s--", color="#d62728", ms=3, label="val loss")
    tl = [(h["step"], h["train_loss"]) for h in history if h["train_loss"] is not None]
    if tl:
        ax2.plot(*zip(*tl), ":", color="#7f7f7f", label="train loss")
    ax2.set_ylabel("cross-entropy")
    head = next((p.steps for p in phases if p.frozen_backbone), 0)
    if head:
        ax.axvline(head, color="#2ca02c", lw=1, label="backbone unfrozen")
    ax.axvline(best_step, color="#ff7f0e", lw=1, ls="-.", label=f"selected (step {best_step})")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def markdown(r: dict) -> str:
    """report.md: the same numbers as report.json, as text."""
    t, m, w = r["training"], r["metrics"], r["weights"]
    b = t["budget"]
    src = f"`{Path(w['path']).name}` (sha256 `{w['sha256'][:16]}…`)" if w["path"] else "none: trained from scratch"
    lines = [
        f"# Teacher: timm:{r['arch']}",
        "",
        f"- weights: {src}" + "".join(f"\n  - {n}" for n in w.get("notes", [])),
        (f"- data: `{r['data']['path']}` ({r['data']['format']}, sha256 `{(r['data']['sha256'] or '')[:16]}…`), "
         f"{r['data']['channels']} channel(s), {r['data']['image_size'][0]}×{r['data']['image_size'][1]}, "
         f"{r['data']['num_classes']} classes; train/val/test "
         f"{'/'.join(str(r['data']['splits'][k]) for k in ('train', 'val', 'test'))}"),
        (f"- training: {t['steps_run']} of {b['total_steps']} steps ({b['source']}; {b['rule']}): head "
         f"{b['head_steps']} at lr {b['head_lr']:g} with the backbone frozen, whole network {b['full_steps']} at lr "
         f"{b['full_lr']:g}; batch {b['batch_size']}; {_stopped(t)}"
         f"{t['seconds']:.0f} s on {t['device']}; seed {t['seed']}"),
        f"- augmentation: {t['augmentation'].get('policy')}: {'; '.join(t['augmentation'].get('ops') or ['none'])}",
        f"- selected: step {t['best_step']} ({t['best_phase']} phase), {t['selection']}",
        "",
        "| split | AUC (95 % CI) | accuracy | sensitivity | specificity |",
        "|---|---|---|---|---|",
    ]
    for split in ("val", "test"):
        s = m[split]
        lines.append(f"| {split} | {_auc(s)} | {s['accuracy']:.4f} | {s['sensitivity']:.4f} | {s['specificity']:.4f} |")
    a = r["onnx"]["agreement"]
    lines += [
        "",
        "Model selection and the threshold are on val; test was evaluated once, on the selected weights.",
        "",
        (f"- `{r['onnx']['file']}` (opset {r['onnx']['opset']}) vs torch on {a['n']} test images: agreement "
         f"{100 * a['agreement']:.1f} %, max |Δlogit| {a['max_abs_diff']:.3g} (allowed {a['max_abs_diff_allowed']:.3g})"),
        f"- next: `edgekd compress --teacher {Path(r['config']['out']) / 'teacher.onnx'} --data {r['data']['path']}`",
        "",
        "![training curve](training_curve.png)",
        "",
    ]
    return "\n".join(lines)
