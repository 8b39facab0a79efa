"""Benchmark suites: a YAML file naming teachers × datasets × targets × settings.

A suite is read into a typed :class:`Suite` with a strict schema (an unknown key or a bad value
fails with the key and the fix, as target profiles do). Its run matrix is the product of the four
lists; each :class:`Run` becomes one :class:`edgekd.config.CompressConfig`. Running, resuming and
aggregating live in :mod:`edgekd.suites.run`; the file format is documented in
benchmarks/README.md ("Suites")::

    name: pneumonia-cpu
    datasets:
      pneumonia: {path: ../../../shared/data/pneumoniamnist.npz, env: EDGEKD_PNEUMONIA}
    teachers:
      resnet18: {spec: "timm:resnet18", train: {epochs: 8}}   # train-if-missing, cached
    targets: [intel-cpu, generic-cpu]
    settings:
      default: {image_size: 64, prune_ratio: 0.8}

Relative paths are relative to the suite file.
"""
from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import CompressConfig, Preprocessing
from ..errors import InputError, did_you_mean

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*(-[A-Za-z0-9_.]+)*$")  # no "--": it separates run-id parts

# setting key -> (CompressConfig section or None for top level, field, kind)
SETTINGS: dict[str, tuple[str | None, str, str]] = {
    "student": ("distill", "student", "str"),
    "student_weights": ("distill", "student_weights", "str"),
    "max_steps": ("distill", "max_steps", "int"),
    "batch_size": ("distill", "batch_size", "int"),
    "lr": ("distill", "lr", "float"),
    "temperature": ("distill", "temperature", "float"),
    "alpha": ("distill", "alpha", "float"),
    "patience": ("distill", "patience", "int"),
    "augment": ("distill", "augment", "str"),
    "flips": ("distill", "flips", "bool"),
    "mixup": ("distill", "mixup", "float"),
    "teacher_mode": ("distill", "teacher_mode", "str"),
    "cached_views": ("distill", "cached_views", "int"),
    "prune_ratio": ("prune", "ratio", "float"),
    "prune_steps": ("prune", "steps", "int"),
    "finetune_steps": ("prune", "finetune_steps", "int"),
    "recovery_steps": ("prune", "recovery_steps", "int"),
    "importance": ("prune", "importance", "str"),
    "prune_depth": ("prune", "depth", "int"),
    "quantize": ("quant", "enabled", "bool"),
    "calibration_samples": ("quant", "calibration_samples", "int"),
    "qat_steps": ("quant", "qat_steps", "int"),
    "qat_lr": ("quant", "qat_lr", "float"),
    "warmup": ("bench", "warmup", "int"),
    "iterations": ("bench", "iterations", "int"),
    "max_iterations": ("bench", "max_iterations", "int"),
    "rel_ci": ("bench", "rel_ci", "float"),
    "max_seconds": ("bench", "max_seconds", "float"),
    "threads": ("bench", "threads", "int"),
    "batch": ("bench", "batch", "int"),
    "memory": ("bench", "memory", "bool"),
    "image_size": ("preprocessing", "image_size", "int"),
    "mean": ("preprocessing", "mean", "floats"),
    "std": ("preprocessing", "std", "floats"),
    "max_auc_drop": (None, "max_auc_drop", "float"),
    "max_sensitivity_drop": (None, "max_sensitivity_drop", "float"),
    "max_robust_drop": (None, "max_robust_drop", "float"),
    "robust_images": ("bench", "robust_images", "int"),
    "min_region": ("bench", "min_region", "int"),
    "operating_point": ("bench", "operating_point", "str"),
    "seed": (None, "seed", "int"),
    "max_samples": (None, "max_samples", "int"),
}
_NULLABLE = ("student", "image_size", "threads", "batch", "max_samples")  # null: the default (target's, data's)
_TOP = ("name", "description", "datasets", "teachers", "targets", "settings")
_DATASET = ("path", "env")
_TEACHER = ("spec", "weights", "train", "trust_checkpoint")
_TRAIN = ("epochs", "lr", "batch_size")


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    path: Path  # resolved (``env`` wins when set)


@dataclass(frozen=True)
class TrainRecipe:
    """Train-if-missing: a timm architecture trained on each dataset it meets, cached in the suite's out."""

    epochs: int = 8
    lr: float = 3e-3
    batch_size: int = 64


@dataclass(frozen=True)
class TeacherEntry:
    name: str
    spec: str  # a model file, or "timm:<arch>"
    weights: Path | None = None  # weights of a timm teacher
    train: TrainRecipe | None = None  # train-if-missing (timm spec, no weights)
    trust_checkpoint: bool = False


@dataclass(frozen=True)
class Run:
    """One cell of the matrix: one ``compress`` into ``<suite-out>/runs/<id>/``."""

    teacher: TeacherEntry
    dataset: DatasetEntry
    target: str
    setting: str
    values: dict[str, Any] = field(hash=False, compare=False)  # the setting's keys (SETTINGS)

    @property
    def id(self) -> str:
        return f"{self.teacher.name}--{self.dataset.name}--{self.target}--{self.setting}"


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    datasets: tuple[DatasetEntry, ...]
    teachers: tuple[TeacherEntry, ...]
    targets: tuple[str, ...]
    settings: dict[str, dict[str, Any]] = field(hash=False)
    source: Path | None = None

    def runs(self) -> list[Run]:
        """The run matrix, teacher-major (a trained teacher is reused by the runs that follow)."""
        return [Run(t, d, tg, s, self.settings[s]) for t, d, s, tg in
                itertools.product(self.teachers, self.datasets, self.settings, self.targets)]


# --------------------------------------------------------------------------- finding and parsing


def suites_dir() -> Path:
    """``$EDGEKD_SUITES``, else the repository's ``benchmarks/suites``."""
    env = os.environ.get("EDGEKD_SUITES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "benchmarks" / "suites"


def find_suite(name_or_path: str | os.PathLike) -> Path:
    """A suite file by path, or by name in :func:`suites_dir` (``pneumonia-cpu``)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise InputError(f"suite file {p} does not exist")
        return p
    path = suites_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        names = sorted(q.stem for q in suites_dir().glob("*.yaml"))
        raise InputError(f"unknown suite '{name_or_path}'{did_you_mean(str(name_or_path), names)}; known suites: "
                         f"{', '.join(names) or 'none'} (in {suites_dir()}), or pass a path to a .yaml file")
    return path


def load_suite(name_or_path: str | os.PathLike) -> Suite:
    path = find_suite(name_or_path)
    return parse_suite(path.read_text(), source=path)


def parse_suite(text: str, *, source: Path | None = None) -> Suite:
    """Validate a suite's YAML text; paths are resolved against the suite file's folder."""
    import yaml

    where = f"suite {source}" if source else "suite"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise InputError(f"{where} is not valid YAML{f' at line {line + 1}' if line is not None else ''}: fix the syntax") from None
    raw = _mapping(raw, where, _TOP, required=("name", "datasets", "teachers", "targets", "settings"))
    base = source.resolve().parent if source else Path.cwd()
    name = _name(raw["name"], f"{where}: 'name'")
    datasets = tuple(_dataset(k, v, f"{where}: dataset '{k}'", base) for k, v in _named(raw, "datasets", where).items())
    teachers = tuple(_teacher(k, v, f"{where}: teacher '{k}'", base) for k, v in _named(raw, "teachers", where).items())
    targets = _targets(raw["targets"], where)
    settings = {k: _setting(v, f"{where}: setting '{k}'") for k, v in _named(raw, "settings", where).items()}
    desc = raw.get("description", "")
    if not isinstance(desc, str):
        raise InputError(f"{where}: 'description' must be a string")
    return Suite(name, desc, datasets, teachers, targets, settings, source)


def _mapping(raw: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(raw, dict):
        raise InputError(f"{where} must be a YAML mapping with keys {', '.join(allowed)}")
    for key in raw:
        if key not in allowed:
            raise InputError(f"{where}: unknown key '{key}'{did_you_mean(str(key), allowed)}; allowed keys: "
                             f"{', '.join(allowed)}")
    for key in required:
        if key not in raw:
            raise InputError(f"{where}: missing required key '{key}'")
    return raw


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise InputError(f"{where} {value!r} must be letters, digits, '.', '_' or single '-' (it names a folder)")
    return value


def _named(raw: dict, key: str, where: str) -> dict:
    entries = raw[key]
    if not isinstance(entries, dict) or not entries:
        raise InputError(f"{where}: '{key}' must be a non-empty mapping of name -> entry")
    for k in entries:
        _name(k, f"{where}: {key[:-1]} name")
    return entries


def _path(value: Any, where: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise InputError(f"{where} must be a path string")
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (base / p).resolve()


def _dataset(name: str, raw: Any, where: str, base: Path) -> DatasetEntry:
    raw = _mapping(raw, where, _DATASET, required=("path",))
    env = raw.get("env")
    if env is not None and not isinstance(env, str):
        raise InputError(f"{where}: 'env' must be the name of an environment variable")
    path = Path(os.environ[env]) if env and os.environ.get(env) else _path(raw["path"], f"{where}: 'path'", base)
    return DatasetEntry(name, path)


def _teacher(name: str, raw: Any, where: str, base: Path) -> TeacherEntry:
    raw = _mapping(raw, where, _TEACHER, required=("spec",))
    spec = raw["spec"]
    if not isinstance(spec, str) or not spec:
        raise InputError(f"{where}: 'spec' must be a model file or timm:<arch>")
    if not spec.startswith("timm:"):
        spec = str(_path(spec, f"{where}: 'spec'", base))
    weights = _path(raw["weights"], f"{where}: 'weights'", base) if raw.get("weights") is not None else None
    train = None
    if raw.get("train") is not None:
        if not spec.startswith("timm:") or weights is not None:
            raise InputError(f"{where}: 'train' needs spec timm:<arch> and no 'weights' (it trains the weights)")
        t = _mapping(raw["train"], f"{where}: 'train'", _TRAIN)
        for key, kind in (("epochs", int), ("batch_size", int), ("lr", (int, float))):
            if key in t and (not isinstance(t[key], kind) or isinstance(t[key], bool) or t[key] <= 0):
                raise InputError(f"{where}: train.{key} is {t[key]!r}, expected a positive number")
        train = TrainRecipe(**t)
    elif spec.startswith("timm:") and weights is None:
        raise InputError(f"{where}: a timm teacher needs 'weights' (a file) or 'train' (train-if-missing recipe)")
    trust = raw.get("trust_checkpoint", False)
    if not isinstance(trust, bool):
        raise InputError(f"{where}: 'trust_checkpoint' must be true or false")
    return TeacherEntry(name, spec, weights, train, trust)


def _targets(raw: Any, where: str) -> tuple[str, ...]:
    from ..targets import load_target

    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(t, str) for t in raw):
        raise InputError(f"{where}: 'targets' must be a non-empty list of target names (see `edgekd targets list`)")
    for t in raw:
        load_target(t)  # unknown names fail here, with a suggestion
    if len(set(raw)) != len(raw):
        raise InputError(f"{where}: 'targets' lists a target twice")
    return tuple(raw)


def _setting(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    raw = _mapping(raw, where, tuple(SETTINGS))
    return {k: _value(v, SETTINGS[k][2], f"{where}: '{k}'", k in _NULLABLE) for k, v in raw.items()}


def _value(v: Any, kind: str, where: str, nullable: bool) -> Any:
    if v is None and nullable:
        return None  # the default: e.g. image_size null keeps the data's size, student null the target's
    ok = {
        "int": isinstance(v, int) and not isinstance(v, bool),
        "float": isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": isinstance(v, bool),
        "str": isinstance(v, str),
        "strs": isinstance(v, list) and all(isinstance(x, str) for x in v),
        "floats": isinstance(v, (int, float, list)) and not isinstance(v, bool)
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (v if isinstance(v, list) else [v])),
    }[kind]
    if not ok:
        expected = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
                    "strs": "a list of strings", "floats": "a number or a list of numbers"}[kind]
        raise InputError(f"{where} is {v!r}, expected {expected}{' or null' if nullable else ''}")
    if kind == "float":
        return float(v)
    if kind in ("strs", "floats"):
        items = v if isinstance(v, list) else [v]
        return tuple(float(x) for x in items) if kind == "floats" else tuple(items)
    return v


# --------------------------------------------------------------------------- one run -> CompressConfig


def run_config(run: Run, out: Path, teacher_weights: Path | None) -> CompressConfig:
    """The CompressConfig of ``run`` writing into ``out`` (its own folder, replaced when re-run)."""
    cfg = CompressConfig(target=run.target, out=Path(out), teacher=run.teacher.spec, teacher_weights=teacher_weights,
                         trust_checkpoint=run.teacher.trust_checkpoint, data=run.dataset.path,
                         preprocessing=Preprocessing(), overwrite=True)
    for key, value in run.values.items():
        section, name, _ = SETTINGS[key]
        setattr(getattr(cfg, section) if section else cfg, name, value)
    return cfg
