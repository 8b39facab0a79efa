"""Datasets listed in a manifest: a CSV or JSON table of ``file, label[, split][, patient_id]``.

CSV: a header row naming the columns (case-insensitive; extra columns are kept for ``--split-by``).
JSON: a list of objects with the same keys. ``file`` is relative to the manifest's folder (or
absolute): a DICOM file (``.dcm``/``.dicom``, or any file with the DICM marker: :mod:`.dicom`) or an
image (png, jpg, jpeg, bmp, tif, tiff: read as in :mod:`.folder`); both may be mixed. ``label`` is a
class name (classes: the sorted names) or an integer 0..K-1 (every label then an integer).

Splits: a ``split`` column (train / val / test on every row) is used as given, and refused when
one ``patient_id`` appears in two splits. Without it, ``split_by`` (``--split-by patient_id``, or
another column; ``file``: each image on its own) makes seeded, stratified splits by
``split_fractions`` (default 70/15/15) that keep each group on one side (:mod:`.splits`).
Patients per split are recorded in ``Dataset.extra`` (``patients``, ``patient_ids``).
A folder passed as data with a ``manifest.csv``, ``manifest.json`` or ``labels.csv`` in it (or a
single ``*.csv``) and no ``train/`` folder is read as that manifest.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import sha256_file
from .._limits import limits
from .._progress import track
from ..config import DataOptions, Preprocessing
from ..errors import DataError, did_you_mean
from . import dicom
from ._base import Dataset, check_every_class, shown
from .folder import (
    IMAGE_EXTENSIONS,
    _channels_and_size,
    _decode,
    _Item,
    _load_split,
    _probe,
)
from .preprocess import check_max_samples, subset_indices
from .splits import SPLITS, check_fractions, check_leakage, make_group_splits

MANIFEST_NAMES = ("manifest.csv", "manifest.json", "labels.csv")
COLUMNS = "file,label[,split][,patient_id]"
PATIENT = "patient_id"


@dataclass
class _Row:
    line: int  # CSV line number (header = 1) or JSON index + 1
    file: str
    label: str
    split: str
    columns: dict[str, str] = field(default_factory=dict)


def find_manifest(folder: Path) -> Path | None:
    """The manifest a folder holds: a known name first, else its only ``*.csv``; None when it has none."""
    for name in MANIFEST_NAMES:
        if (folder / name).is_file():
            return folder / name
    csvs = sorted(p for p in folder.glob("*.csv") if p.is_file())
    if len(csvs) > 1:
        raise DataError(f"{shown(str(folder))} holds {len(csvs)} CSV files ({', '.join(shown(p.name, 40) for p in csvs[:3])}"
                        f"{', ...' if len(csvs) > 3 else ''}) and no manifest.csv: pass the manifest's path as --data")
    return csvs[0] if csvs else None


def _cell(value) -> str:
    return "" if value is None else str(value).strip()


def _read_rows(path: Path) -> tuple[list[_Row], list[str]]:
    name = shown(path.name)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"manifest {name} is not UTF-8 text: save it as UTF-8 CSV or JSON") from None
    except OSError as exc:
        raise DataError(f"cannot read manifest {shown(str(path))} ({exc.strerror or exc}): check its permissions") from None
    if path.suffix.lower() == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"manifest {name} is not valid JSON ({exc.msg} at line {exc.lineno}): fix it, or write a CSV "
                            f"with the columns {COLUMNS}") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise DataError(f"manifest {name} must be a JSON list of objects with the keys {COLUMNS}")
        records = [{str(k).strip().lower(): _cell(v) for k, v in r.items()} for r in records]
        columns = sorted({k for r in records for k in r})
        lines = range(1, len(records) + 1)
    else:
        reader = csv.DictReader(text.splitlines(), restkey="\0extra")
        columns = [_cell(c).lower() for c in (reader.fieldnames or [])]
        records, lines = [], []
        for r in reader:
            if r.get("\0extra"):
                raise DataError(f"manifest {name} line {reader.line_num} has more cells than the header's "
                                f"{len(columns)} columns: quote file names that contain commas")
            records.append({_cell(k).lower(): _cell(v) for k, v in r.items() if k != "\0extra"})
            lines.append(reader.line_num)
    missing = [c for c in ("file", "label") if c not in columns]
    if missing:
        has = ", ".join(shown(c, 30) for c in columns[:10]) or "nothing"
        raise DataError(f"manifest {name} has no {' or '.join(missing)} column (it has: {has}): its header must name "
                        f"the columns {COLUMNS}")
    if not records:
        raise DataError(f"manifest {name} lists no files: add one row per image ({COLUMNS})")
    rows = []
    for line, r in zip(lines, records):
        for key in ("file", "label"):
            if not r.get(key):
                raise DataError(f"manifest {name} line {line} has an empty {key}: every row needs a file and a label")
        rows.append(_Row(line, r["file"], r["label"], r.get("split", "").lower(), r))
    return rows, columns


def _labels(rows: list[_Row], name: str) -> tuple[np.ndarray, list[str]]:
    """Class indices and names: integer labels as given (0..K-1), else the sorted distinct names."""
    raw = [r.label for r in rows]
    if all(v.lstrip("-").isdigit() for v in raw):
        ints = np.array([int(v) for v in raw], dtype=np.int64)
        if ints.min() < 0:
            bad = rows[int(np.argmin(ints))]
            raise DataError(f"manifest {name} line {bad.line} has label {bad.label}: integer labels must be 0..K-1")
        return ints, [str(i) for i in range(int(ints.max()) + 1)]
    names = sorted(set(raw))
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[v] for v in raw], dtype=np.int64), names


def _resolve_files(rows: list[_Row], base: Path, name: str) -> list[tuple[Path, str]]:
    """(path, kind) per row: kind "dicom" or "image"; missing, duplicate and unknown files refused."""
    out, first = [], {}
    cap = limits().max_images
    if len(rows) > cap:
        raise DataError(f"manifest {name} lists {len(rows)} images, over the limit of {cap}: use a subset, or raise "
                        "EDGEKD_MAX_IMAGES")
    for r in rows:
        path = Path(r.file) if os.path.isabs(r.file) else base / r.file
        key = os.path.normpath(str(path))
        if key in first:
            raise DataError(f"manifest {name} lists {shown(r.file)} twice (lines {first[key]} and {r.line}): list each "
                            "image once (a duplicate can land in two splits)")
        first[key] = r.line
        if not path.is_file():
            raise DataError(f"manifest {name} line {r.line}: file {shown(r.file)} not found (relative paths are read "
                            f"from {shown(str(base))}): fix the path or remove the row")
        if dicom.is_dicom(path):
            kind = "dicom"
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            kind = "image"
        else:
            raise DataError(f"manifest {name} line {r.line}: {shown(r.file)} is neither DICOM (no DICM marker) nor an "
                            f"image ({', '.join(IMAGE_EXTENSIONS)}): convert it or remove the row")
        out.append((path, kind))
    return out


def _given_splits(rows: list[_Row], columns: list[str], name: str, opts: DataOptions) -> list[str]:
    bad = next((r for r in rows if r.split not in SPLITS), None)
    if bad is not None:
        what = f"'{shown(bad.split, 30)}'{did_you_mean(bad.split, SPLITS)}" if bad.split else "no split"
        raise DataError(f"manifest {name} line {bad.line} has {what}: the split column must say train, val or test on "
                        "every row (or drop the column and pass --split-by patient_id)")
    if opts.split_by is not None:
        raise DataError(f"manifest {name} has a split column and --split-by {shown(opts.split_by, 30)} was given: use "
                        "the given splits (drop --split-by) or make new ones (drop the split column)")
    if PATIENT in columns:
        known = [r for r in rows if r.columns.get(PATIENT)]
        check_leakage([r.columns[PATIENT] for r in known], [r.split for r in known], PATIENT, f"manifest {name}")
    return [r.split for r in rows]


def _made_splits(rows: list[_Row], columns: list[str], labels: np.ndarray, k: int, name: str,
                 opts: DataOptions, seed: int) -> list[str]:
    by = opts.split_by
    if by is None:
        hint = f"--split-by {PATIENT} (keeps each patient on one side)" if PATIENT in columns else \
            f"a {PATIENT} column and --split-by {PATIENT}, or --split-by file (only when no patient has two images)"
        raise DataError(f"manifest {name} has no split column: add one (train/val/test) or pass {hint}")
    fractions = check_fractions(opts.split_fractions)
    if by == "file":
        groups = [r.file for r in rows]
    else:
        by = by.strip().lower()
        if by not in columns:
            raise DataError(f"--split-by {shown(opts.split_by, 30)}: manifest {name} has no such column"
                            f"{did_you_mean(by, columns)} (it has: {', '.join(shown(c, 30) for c in columns)})")
        empty = next((r for r in rows if not r.columns.get(by)), None)
        if empty is not None:
            raise DataError(f"manifest {name} line {empty.line} has an empty {by}: --split-by {by} needs it on every row")
        groups = [r.columns[by] for r in rows]
    splits = make_group_splits(groups, labels, k, fractions, seed)
    if PATIENT in columns and by != PATIENT:  # e.g. --split-by file when a patient has two images
        known = [(r.columns[PATIENT], s) for r, s in zip(rows, splits) if r.columns.get(PATIENT)]
        check_leakage([g for g, _ in known], [s for _, s in known], PATIENT, f"--split-by {by} on manifest {name}",
                      fix=f"pass --split-by {PATIENT}")
    return splits


def _sha256(path: Path, rows: list[_Row], files: list[tuple[Path, str]]) -> str:
    """The manifest's bytes, then every listed file's name (as listed) and bytes, in manifest order."""
    h = hashlib.sha256(sha256_file(path).encode())
    for r, (p, _) in zip(rows, files):
        h.update(r.file.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def load_manifest(path: str | Path, pre: Preprocessing, *, max_samples: int | None = None, seed: int = 0,
                  options: DataOptions | None = None) -> Dataset:
    """Load, validate, split and preprocess the images a manifest lists into a :class:`Dataset`.

    Every header is probed (channels, size, frame count) before any pixels are decoded; then only
    the rows kept by ``max_samples`` are decoded (the rows :meth:`Split.subset` would pick).
    """
    opts = options or DataOptions()
    path = Path(path)
    check_max_samples(max_samples)
    window, frame = dicom.check_window(opts.window), dicom.check_frame(opts.frame)
    name = shown(path.name)
    rows, columns = _read_rows(path)
    labels, classes = _labels(rows, name)
    if len(classes) < 2:
        raise DataError(f"manifest {name} has only one class ({shown(classes[0], 40)}): a classifier needs at least 2")
    base = path.parent
    files = _resolve_files(rows, base, name)
    given = "split" in columns and any(r.split for r in rows)
    split_of = (_given_splits(rows, columns, name, opts) if given
                else _made_splits(rows, columns, labels, len(classes), name, opts, seed))
    root = Path(os.path.commonpath([str(base.resolve())] + [str(p.resolve().parent) for p, _ in files]))
    items: dict[str, list[tuple[_Item, _Row, str]]] = {s: [] for s in SPLITS}
    for (p, kind), r, lab, s in zip(files, rows, labels, split_of):
        items[s].append((_Item(p.resolve(), int(lab)), r, kind))
    for s in SPLITS:  # header probe: DICOM here, images with the folder reader's probe
        dcm = [it for it, _, kind in items[s] if kind == "dicom"]
        for it in track(dcm, f"checking {s} DICOM headers"):
            head = dicom.probe_dicom(it.path, frame=frame, name=_rel(it.path, base))
            it.mode, it.size = ("L" if head.channels == 1 else "RGB"), head.size
        _probe([it for it, _, kind in items[s] if kind == "image"], root, s)
    every = [it for s in SPLITS for it, _, _ in items[s]]
    channels, resolved, out_hw = _channels_and_size(every, root, pre, "all")
    chosen = {s: [items[s][i] for i in subset_indices(len(items[s]), max_samples, seed)] for s in SPLITS}
    check_every_class(f"manifest {name}", {s: np.array([it.label for it, _, _ in items[s]], dtype=np.int64) for s in SPLITS},
                      {s: np.array([it.label for it, _, _ in chosen[s]], dtype=np.int64) for s in SPLITS}, classes,
                      max_samples)
    summary = {s: dicom.DicomSummary() for s in SPLITS}
    kinds = {os.fspath(it.path): kind for s in SPLITS for it, _, kind in chosen[s]}

    def decoder(split: str):
        def decode(item: _Item, root_: Path, ch: int) -> np.ndarray:
            if kinds[os.fspath(item.path)] == "image":
                return _decode(item, root_, ch)
            x, info = dicom.decode_dicom(item.path, window=window, frame=frame, name=_rel(item.path, base))
            summary[split].add(info)
            x = x * np.float32(255.0)  # [0, 1] -> the 0-255 scale preprocess() divides by 255
            return np.repeat(x[:, :, None], 3, axis=2) if (x.ndim == 2 and ch == 3) else x
        return decode

    splits = {s: _load_split([it for it, _, _ in chosen[s]], root, s, resolved, out_hw, decode=decoder(s))
              for s in SPLITS}
    extra = _extra(items, chosen, columns, classes, opts, given, summary, splits)
    all_dicom = all(kind == "dicom" for _, kind in files)
    return Dataset(
        train=splits["train"], val=splits["val"], test=splits["test"], num_classes=len(classes),
        channels=channels, image_size=out_hw, class_names=classes, format="dicom" if all_dicom else "manifest",
        preprocessing=resolved, path=path, sha256=_sha256(path, rows, files), extra=extra,
    )


def _rel(p: Path, base: Path) -> str:
    try:
        return Path(p).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(p)


def _extra(items, chosen, columns, classes, opts: DataOptions, given: bool, summary, splits) -> dict:
    group = PATIENT if given or opts.split_by in (None, "file") else opts.split_by.strip().lower()
    extra: dict = {
        "manifest_columns": columns,
        "split_source": "given (split column)" if given else f"made by --split-by {opts.split_by}",
        "source_sizes": {s: len(items[s]) for s in SPLITS},
        "class_counts": {s: np.bincount(splits[s].labels.numpy(), minlength=len(classes)).tolist() for s in SPLITS},
        "kinds": dict(Counter(kind for s in SPLITS for _, _, kind in items[s])),
        "native_sizes": [list(hw) for hw in sorted({it.size for s in SPLITS for it, _, _ in items[s]})[:10]],
    }
    if not given:
        extra["split_by"], extra["split_fractions"] = opts.split_by, list(check_fractions(opts.split_fractions))
    if group in columns:
        ids = {s: sorted({r.columns.get(group, "") for _, r, _ in chosen[s]} - {""}) for s in SPLITS}
        extra["patient_column"] = group
        extra["patients"] = {s: len(ids[s]) for s in SPLITS}
        extra["patient_ids"] = ids
    total = dicom.DicomSummary()
    for s in SPLITS:
        total.merge(summary[s])
    if total.photometric:
        extra["dicom"] = {**total.to_dict(), "window": list(opts.window) if isinstance(opts.window, tuple) else opts.window,
                          "frame": opts.frame}
        extra["dicom_ranges"] = {s: {k: summary[s].to_dict()[k] for k in ("stored_range", "modality_range")}
                                 for s in SPLITS}
    return extra
