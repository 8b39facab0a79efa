"""Target profiles: what a piece of hardware runs, read from ``targets/*.yaml`` into a typed profile.

A profile says which runtime executes the model, which precisions are allowed, the thread count
and batch every latency figure uses, the default student, and budgets. Unknown keys and bad
values fail with the key and the fix, so a typo never silently changes what gets shipped.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import TargetError, did_you_mean

RUNTIMES = ("torch", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class TargetProfile:
    name: str  # the name used with --target (file stem)
    runtime: str  # one of RUNTIMES: what executes the shipped model on the device
    precisions: tuple[str, ...]  # allowed precisions of the shipped model
    description: str = ""
    threads: int = 2  # CPU threads for every latency measurement
    batch: int = 1  # batch of the latency figures (batch 1 is always measured too)
    input_size: int | None = None  # model input N×N on the device; None: the data's size
    default_student: str = "mobilenetv3_small_050"  # timm name used when --student is not given
    dla_cores: int = 0  # NVIDIA DLA cores available (0: none)
    gpu_fallback: bool = True  # let layers DLA cannot run fall back to the GPU
    latency_budget_ms: float | None = None  # batch-1 p50 the shipped model should stay under
    memory_budget_mb: float | None = None  # memory the runtime session may use on the device
    max_auc_drop: float = 0.01  # shipping budget: test AUC >= teacher AUC - this (--max-auc-drop overrides)
    max_sensitivity_drop: float = 0.02  # shipping budget: test sensitivity >= teacher's - this (--max-sensitivity-drop)
    max_dice_drop: float = 0.01  # segmentation's budget: test mean Dice >= teacher's - this (--max-dice-drop)
    # shipping budget: mean drop under acquisition shift <= the teacher's + this (--max-robust-drop); None: off
    max_robust_drop: float | None = None
    jetpack: str | None = None  # NVIDIA JetPack release on the device (Jetson targets)
    tensorrt: str | None = None  # TensorRT major.minor on the device: engines are built there, for that version
    python: str | None = None  # Python on the device (the runner must run there)
    workspace_mb: int | None = None  # TensorRT builder workspace limit
    hardware: dict[str, Any] = field(default_factory=dict)  # facts about the device (free-form, reported)
    source: str | None = None  # the file the profile was read from

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["precisions"] = list(self.precisions)
        return d


@dataclass(frozen=True)
class Budget:
    """The shipping budgets of one run: the profile's, each overridable by a command-line option."""

    max_auc_drop: float  # ship only when test AUC >= teacher AUC - this
    max_sensitivity_drop: float  # ... and test sensitivity >= teacher sensitivity - this
    source: dict[str, str] = field(default_factory=dict)  # per budget: "profile" or "option"
    max_dice_drop: float = 0.01  # segmentation: test mean Dice >= teacher mean Dice - this
    max_robust_drop: float | None = None  # ... and mean drop under shift <= the teacher's + this (None: no such rule)


def shipping_budget(profile: TargetProfile, max_auc_drop: float | None = None,
                    max_sensitivity_drop: float | None = None, max_dice_drop: float | None = None,
                    max_robust_drop: float | None = None) -> Budget:
    """The profile's budgets with the options that were given (not None) in their place."""
    from .errors import InputError

    values, source = {}, {}
    for key, option in (("max_auc_drop", max_auc_drop), ("max_sensitivity_drop", max_sensitivity_drop),
                        ("max_dice_drop", max_dice_drop), ("max_robust_drop", max_robust_drop)):
        flag = "--" + key.replace("_", "-")
        if option is not None and (not isinstance(option, (int, float)) or isinstance(option, bool)
                                   or not -1 <= option <= 1):
            raise InputError(f"{flag} {option} must be in [-1, 1] (e.g. 0.01; negative: must beat the teacher)")
        value = getattr(profile, key) if option is None else option
        values[key] = None if value is None else float(value)
        source[key] = "profile" if option is None else "option"
    return Budget(**values, source=source)


def targets_dir() -> Path:
    """``$EDGEKD_TARGETS``, else the repository's ``targets/``, else the copy inside the wheel."""
    env = os.environ.get("EDGEKD_TARGETS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "targets", here / "_targets"):
        if cand.is_dir():
            return cand
    raise TargetError("no targets/ directory found: set EDGEKD_TARGETS to the folder holding the *.yaml profiles")


def list_targets() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.yaml"))


MAX_PROFILE_BYTES = 1 << 20  # a profile is a few dozen lines; anything this big is the wrong file
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _short(value: Any, limit: int = 60) -> str:
    """repr of a user value, one line and short (a whole YAML document must not flood the message)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_profile(path: Path) -> str:
    """The profile's text, or a TargetError for a file that is too big, unreadable or not UTF-8 text."""
    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise TargetError(f"target profile {path} is {size} bytes, over the {MAX_PROFILE_BYTES}-byte limit: "
                              "pass the profile's .yaml file")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise TargetError(f"target profile {path} is not UTF-8 text: pass a YAML file") from None
    except OSError as exc:
        raise TargetError(f"cannot read target profile {path} ({exc.strerror or exc}): check the path") from None


def load_target(name_or_path: str | os.PathLike) -> TargetProfile:
    """A profile by name (``intel-cpu``) or by path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if "\0" in str(p) or not p.is_file():
            raise TargetError(f"target profile {_short(str(p))} does not exist")
        return parse_profile(_read_profile(p), source=p)
    names = list_targets()
    if not _NAME.fullmatch(str(name_or_path)) or not (targets_dir() / f"{name_or_path}.yaml").is_file():
        raise TargetError(
            f"unknown target {_short(str(name_or_path))}{did_you_mean(str(name_or_path), names)}; "
            f"known targets: {', '.join(names)} (see `edgekd targets list`), or pass a profile's .yaml path"
        )
    path = targets_dir() / f"{name_or_path}.yaml"
    profile = parse_profile(_read_profile(path), source=path)
    if profile.name != path.stem:
        raise TargetError(f"target profile {path}: 'name' is '{profile.name}' but the file is {path.name}: make them match")
    return profile


_FIELDS = {f.name: f for f in fields(TargetProfile)}
_REQUIRED = ("name", "runtime", "precisions")


def parse_profile(text: str, *, source: str | os.PathLike | None = None) -> TargetProfile:
    """Validate a profile's YAML text into a :class:`TargetProfile`."""
    import yaml

    where = f"target profile {source}" if source else "target profile"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f" at line {line + 1}" if line is not None else ""
        raise TargetError(f"{where} is not valid YAML{at}: fix the syntax") from None
    except RecursionError:
        raise TargetError(f"{where} nests too deeply to be a profile: fix the YAML") from None
    if not isinstance(raw, dict):
        raise TargetError(f"{where} must be a YAML mapping of keys (name, runtime, precisions, ...)")
    allowed = [k for k in _FIELDS if k != "source"]
    for key in raw:
        if key not in allowed:
            raise TargetError(
                f"{where}: unknown key {_short(key)}{did_you_mean(str(key), allowed)}; allowed keys: {', '.join(allowed)}"
            )
    for key in _REQUIRED:
        if key not in raw:
            raise TargetError(f"{where}: missing required key '{key}'")
    v = dict(raw)

    def bad(key: str, expected: str) -> TargetError:
        return TargetError(f"{where}: '{key}' is {_short(v[key])}, expected {expected}")

    if not isinstance(v["name"], str) or not v["name"]:
        raise bad("name", "a non-empty string")
    if v["runtime"] not in RUNTIMES:
        hint = did_you_mean(str(v["runtime"]), RUNTIMES)
        raise TargetError(f"{where}: runtime {_short(v['runtime'])} is not one of {', '.join(RUNTIMES)}{hint}")
    precs = v["precisions"]
    if isinstance(precs, str):
        precs = [precs]
    if not isinstance(precs, list) or not precs:
        raise bad("precisions", f"a non-empty list of {', '.join(PRECISIONS)}")
    for prec in precs:
        if prec not in PRECISIONS:
            raise TargetError(
                f"{where}: precision {_short(prec)} is not one of {', '.join(PRECISIONS)}"
                f"{did_you_mean(str(prec), PRECISIONS)}"
            )
    v["precisions"] = tuple(precs)
    for key, lo, hi in (("threads", 1, 1024), ("batch", 1, 4096), ("dla_cores", 0, 8)):
        if key in v and (not isinstance(v[key], int) or isinstance(v[key], bool) or v[key] < lo):
            raise bad(key, f"an integer >= {lo}")
        if key in v and v[key] > hi:
            raise bad(key, f"at most {hi}")
    if v.get("input_size") is not None and (
        not isinstance(v["input_size"], int) or isinstance(v["input_size"], bool) or not 8 <= v["input_size"] <= 1024
    ):
        raise bad("input_size", "null or an integer in [8, 1024]")
    for key in ("latency_budget_ms", "memory_budget_mb"):
        if v.get(key) is not None and (
            not isinstance(v[key], (int, float)) or isinstance(v[key], bool) or v[key] <= 0
        ):
            raise bad(key, "null or a positive number")
    for key in ("max_auc_drop", "max_sensitivity_drop", "max_dice_drop"):
        if key in v and (not isinstance(v[key], (int, float)) or isinstance(v[key], bool) or not -1 <= v[key] <= 1):
            raise bad(key, "a number in [-1, 1] (e.g. 0.01; negative: the student must beat the teacher)")
    if v.get("max_robust_drop") is not None and (
        not isinstance(v["max_robust_drop"], (int, float)) or isinstance(v["max_robust_drop"], bool)
        or not -1 <= v["max_robust_drop"] <= 1
    ):
        raise bad("max_robust_drop", "null (off) or a number in [-1, 1] (e.g. 0.02: at most 0.02 more mean AUC drop "
                                     "under shift than the teacher)")
    if v.get("workspace_mb") is not None and (
        not isinstance(v["workspace_mb"], int) or isinstance(v["workspace_mb"], bool) or v["workspace_mb"] < 16
    ):
        raise bad("workspace_mb", "null or an integer >= 16 (MiB)")
    for key in ("jetpack", "tensorrt", "python"):
        if v.get(key) is not None:
            if isinstance(v[key], (int, float)) and not isinstance(v[key], bool):
                raise bad(key, 'a quoted version string, e.g. "8.2" (YAML reads 8.2 as a number)')
            if not isinstance(v[key], str):
                raise bad(key, "null or a version string")
    if v["runtime"] == "tensorrt" and not v.get("tensorrt"):
        raise TargetError(f"{where}: runtime tensorrt needs 'tensorrt' (the device's TensorRT version, e.g. \"8.2\")")
    if v.get("dla_cores", 0) > 0 and v["runtime"] != "tensorrt":
        raise TargetError(f"{where}: 'dla_cores' > 0 needs runtime tensorrt (DLA runs TensorRT engines only)")
    if "gpu_fallback" in v and not isinstance(v["gpu_fallback"], bool):
        raise bad("gpu_fallback", "true or false")
    for key in ("description", "default_student"):
        if key in v and not isinstance(v[key], str):
            raise bad(key, "a string")
    if "hardware" in v and not isinstance(v["hardware"], dict):
        raise bad("hardware", "a mapping of facts (key: value)")
    v["source"] = str(source) if source else None
    return TargetProfile(**v)
