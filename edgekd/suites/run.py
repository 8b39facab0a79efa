"""Run a suite: one ``compress`` per run into ``<out>/runs/<run-id>/``, resumable, then aggregate.

A run is finished when its ``report.json`` exists: ``compress`` publishes its output folder
atomically (staging folder + rename), so an interrupted run leaves nothing behind and a re-run
skips exactly the finished ones. A finished run whose recorded configuration differs from the
suite's (the file was edited) is stale and runs again; ``force`` re-runs everything. A run that
ships nothing (NotShippedError) is finished, with ``shipped`` null. A run that fails with another
edgekd error is recorded as failed and the suite goes on; it is retried next time.

Teachers with a ``train`` recipe are trained on first use (per dataset, image size, seed and
sample cap) and cached in ``<out>/teachers/`` with a JSON note of how they were made.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .._io import sha256_file, sha256_tree, write_json_atomic
from ..config import CompressConfig, Preprocessing
from ..errors import EdgekdError, InputError, NotShippedError
from .spec import Run, Suite, run_config

Log = Callable[[str], None]
RunFn = Callable[..., object]  # compress(cfg, log=...)
_IGNORED = ("out", "overwrite")  # config keys that may differ between a finished run and the suite


@dataclass
class SuiteResult:
    out: Path
    results: dict  # the aggregate written to results.json
    ran: list[str] = field(default_factory=list)  # run ids executed now (finished or not shipped)
    skipped: list[str] = field(default_factory=list)  # already finished before this call
    failed: dict[str, str] = field(default_factory=dict)  # run id -> one-line error


def select_runs(suite: Suite, only: list[str] | None = None) -> list[Run]:
    """The matrix, or the runs whose id matches one of the ``only`` glob patterns."""
    runs = suite.runs()
    if not only:
        return runs
    picked = [r for r in runs if any(fnmatch.fnmatchcase(r.id, pat) for pat in only)]
    if not picked:
        raise InputError(f"--only {' '.join(only)} matches no run of suite {suite.name}; run ids look like "
                         f"{runs[0].id} (see `edgekd bench {suite.name} --list`)")
    return picked


def run_suite(suite: Suite, out: Path, *, force: bool = False, only: list[str] | None = None,
              run_fn: RunFn | None = None, log: Log = print) -> SuiteResult:
    """Run every unfinished run of ``suite`` into ``out`` and write the aggregate after each one."""
    from .results import write_results

    if run_fn is None:
        from ..api import compress as run_fn
    out = Path(out)
    runs = select_runs(suite, only)
    check_inputs(suite, runs)
    result = SuiteResult(out, {})
    teachers = TeacherCache(out / "teachers", log)
    for i, run in enumerate(runs, 1):
        run_dir = out / "runs" / run.id
        cfg = run_config(run, run_dir, teachers.weights_path(run))
        state = run_state(run_dir, cfg)
        if state == "finished" and not force:
            log(f"[{i}/{len(runs)}] {run.id}: finished earlier, skipped (--force re-runs it)")
            result.skipped.append(run.id)
            continue
        why = {"stale": "its settings changed since it ran, re-running", "finished": "re-running (--force)"}
        log(f"[{i}/{len(runs)}] {run.id}: " + why.get(state, "running"))
        _remove_leftovers(run_dir)
        teachers.ensure(run)
        try:
            run_fn(cfg, log=lambda msg: log(f"    {msg}"))
        except NotShippedError as exc:
            log(f"    not shipped: {exc}")
        except EdgekdError as exc:
            result.failed[run.id] = str(exc)
            log(f"    FAILED: {exc}")
            continue
        finally:
            result.results = write_results(suite, out, result.failed)
        result.ran.append(run.id)
    result.results = write_results(suite, out, result.failed)
    return result


def run_state(run_dir: Path, cfg: CompressConfig) -> str:
    """``finished`` (report.json with this config), ``stale`` (another config) or ``missing``."""
    report = run_dir / "report.json"
    if not report.is_file():
        return "missing"
    try:
        recorded = json.loads(report.read_text()).get("config", {})
    except (OSError, json.JSONDecodeError):
        return "stale"
    # a setting added to CompressConfig after the run was recorded compares as its default (not as a change)
    recorded = {**{k: v for k, v in CompressConfig().to_dict().items() if k not in recorded}, **recorded}
    from ..tasks import get_task

    resolved = get_task(cfg.task).with_defaults(cfg)  # a report records the task's defaults as they resolved
    return "finished" if _comparable(recorded) == _comparable(resolved.to_dict()) else "stale"


def _comparable(config: dict) -> dict:
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in _IGNORED}))


def _remove_leftovers(run_dir: Path) -> None:
    """Staging folders of a run killed without clean-up (SIGKILL, power loss); a live run's stay."""
    from ..stagecache import sweep_leftovers

    sweep_leftovers(run_dir.parent.glob(f".{run_dir.name}.partial-*"))


def check_inputs(suite: Suite, runs: list[Run]) -> None:
    """Every file the runs need exists (before the first, possibly long, run starts)."""
    for run in runs:
        if not run.dataset.path.exists():
            raise InputError(f"suite {suite.name}: dataset '{run.dataset.name}' at {run.dataset.path} does not exist; "
                             f"fix its path in {suite.source or 'the suite'} (or set its env variable)")
        t = run.teacher
        for what, p in (("spec", None if t.spec.startswith("timm:") else Path(t.spec)), ("weights", t.weights)):
            if p is not None and not p.exists():
                raise InputError(f"suite {suite.name}: teacher '{t.name}' {what} {p} does not exist; fix it in "
                                 f"{suite.source or 'the suite'}")


# --------------------------------------------------------------------------- teachers


TRAIN_LOOP_VERSION = 2  # in the cache key: 2 = edgekd.train's shared loop (the same weights need the same loop)


class TeacherCache:
    """Weights of train-if-missing teachers, keyed by everything that changes them."""

    def __init__(self, folder: Path, log: Log) -> None:
        self.folder, self.log = Path(folder), log
        self._sha: dict[Path, str] = {}

    def weights_path(self, run: Run) -> Path | None:
        """Where the run's teacher weights are (or will be, once trained)."""
        t = run.teacher
        if t.train is None:
            return t.weights
        recipe = self.recipe(run)
        key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
        return self.folder / f"{t.name}-{run.dataset.name}-{key}.safetensors"

    def recipe(self, run: Run) -> dict:
        from ..targets import load_target

        v, t = run.values, run.teacher
        size = v.get("image_size") or load_target(run.target).input_size
        return {"arch": t.spec.removeprefix("timm:"), "data_sha256": self._data_sha(run.dataset.path),
                "image_size": size, "mean": list(v.get("mean", Preprocessing.mean)),
                "std": list(v.get("std", Preprocessing.std)), "max_samples": v.get("max_samples"),
                "seed": v.get("seed", 0), "epochs": t.train.epochs, "lr": t.train.lr, "batch_size": t.train.batch_size,
                "loop": TRAIN_LOOP_VERSION}

    def ensure(self, run: Run) -> Path | None:
        path = self.weights_path(run)
        if run.teacher.train is None or path.exists():
            return path
        recipe = self.recipe(run)
        info = train_teacher(recipe, run.dataset.path, path, log=self.log)
        write_json_atomic(path.with_suffix(".json"), {"teacher": run.teacher.name, "dataset": str(run.dataset.path),
                                                      "recipe": recipe, **info})
        return path

    def _data_sha(self, path: Path) -> str:
        if path not in self._sha:
            self._sha[path] = sha256_tree(path) if path.is_dir() else sha256_file(path)
        return self._sha[path]


def train_teacher(recipe: dict, data: Path, weights: Path, *, log: Log = print) -> dict:
    """Train a timm classifier on ``data`` as ``recipe`` says and save it to ``weights`` (safetensors).

    ``recipe``: arch, image_size (None keeps the data's), mean, std, max_samples, seed, epochs,
    lr, batch_size. Returns best val AUC, best epoch and seconds. Same recipe and machine: same weights.
    """
    import time

    import torch

    from .._compat import import_timm
    from ..data import load_dataset
    from ..models import save_weights
    from ..train import train_classifier

    pre = Preprocessing(image_size=recipe["image_size"], mean=tuple(recipe["mean"]), std=tuple(recipe["std"]))
    ds = load_dataset(data, pre, max_samples=recipe["max_samples"], seed=recipe["seed"])
    log(f"teacher: training {recipe['arch']} for {recipe['epochs']} epochs on {len(ds.train)} images of "
        f"{ds.image_size[0]}×{ds.image_size[1]} (once; cached at {weights})")
    torch.manual_seed(recipe["seed"])
    model = import_timm().create_model(recipe["arch"], pretrained=False, in_chans=ds.channels,
                                       num_classes=ds.num_classes)
    t0 = time.perf_counter()
    res = train_classifier(model, ds.train, ds.val, epochs=recipe["epochs"], lr=recipe["lr"],
                           batch_size=recipe["batch_size"], seed=recipe["seed"], desc=f"teacher {recipe['arch']}")
    seconds = time.perf_counter() - t0
    log(f"teacher: best val AUC {res['best_val_auc']:.4f} (epoch {res['best_epoch']}) in {seconds:.0f} s")
    save_weights(model, weights)
    return {"best_val_auc": res["best_val_auc"], "best_epoch": res["best_epoch"], "seconds": seconds}
