"""``edgekd data inspect PATH``: one call to :func:`edgekd.data.inspection.inspect_dataset`.

The data options are compress's own (its ``typer.Option`` definitions, read from its signature),
so ``inspect`` reads the data exactly as ``compress`` would with the same options.
"""
from __future__ import annotations

import inspect as _signature
import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import EdgekdError
from . import app, fail
from .compress import compress as _compress
from .compress import data_options

data_app = typer.Typer(help="Look at a dataset the way edgekd reads it.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_COMPRESS = {name: p.default for name, p in _signature.signature(_compress).parameters.items()}


@data_app.command("inspect")
def inspect_cmd(
    path: Path = typer.Argument(..., help="The data, as for compress --data: .npz, image folder, .csv/.json manifest (images or DICOM), or a folder holding a manifest."),
    image_size: Optional[int] = _COMPRESS["image_size"],
    mean: Optional[str] = _COMPRESS["mean"],
    std: Optional[str] = _COMPRESS["std"],
    window: Optional[str] = _COMPRESS["window"],
    frame: int = _COMPRESS["frame"],
    split_by: Optional[str] = _COMPRESS["split_by"],
    split_fractions: Optional[str] = _COMPRESS["split_fractions"],
    max_samples: Optional[int] = _COMPRESS["max_samples"],
    seed: int = _COMPRESS["seed"],
    sheet: Optional[Path] = typer.Option(None, help="Where to write the contact sheet PNG (default: edgekd-inspect-<name>.png in the current folder)."),
    per_class: int = typer.Option(8, min=1, max=64, help="Images per class and split on the contact sheet."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON document."),
) -> None:
    """Print what edgekd reads from PATH, per split: images per class, size, channels, value range before and
    after preprocessing, patients when known; write a contact sheet of images as the model will see them."""

    from .._compat import quiet_third_party
    from ..data.inspection import inspect_dataset
    from . import _options as opt

    quiet_third_party()
    try:
        pre = opt.preprocessing(image_size, mean, std)
        opts = data_options(window, frame, split_by, split_fractions)
        out = sheet if sheet is not None else Path(f"edgekd-inspect-{path.stem or 'data'}.png")
        summary = inspect_dataset(path, pre, options=opts, max_samples=max_samples, seed=seed, sheet=out,
                                  per_class=per_class)
    except EdgekdError as exc:
        raise fail(exc)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for line in summary_lines(summary):
        typer.echo(line)


def _rng(r, fmt: str = "{:g}") -> str:
    return "—" if r is None else f"{fmt.format(r[0])} … {fmt.format(r[1])}"


def summary_lines(s: dict) -> list[str]:
    """The summary as plain lines: whole names and numbers at any width (a pipe, a log, a narrow terminal)."""
    pre = s["preprocessing"]
    h, w = s["image_size"]
    native = ", ".join(f"{a}×{b}" for a, b in (s.get("native_sizes") or []))
    lines = [
        f"data: {s['path']} ({s['format']}), sha256 {s['sha256']}",
        f"classes: {s['num_classes']} ({', '.join(s['class_names'])}); channels: {s['channels']}; "
        f"model input {h}×{w}" + (f" (stored sizes: {native})" if native else ""),
        f"preprocessing: x/255 -> resize to {h}×{w} -> (x - {list(pre['mean'])}) / {list(pre['std'])}",
    ]
    if s.get("split_source"):
        how = s["split_source"]
        if s.get("split_fractions"):
            how += f", fractions {'/'.join(f'{f:g}' for f in s['split_fractions'])}"
        lines.append(f"splits: {how}")
    if s.get("dicom"):
        d = s["dicom"]
        lines.append(f"dicom: {d['files']} files decoded; photometric {_counts(d['photometric'])}; "
                     f"transfer syntax {_counts(d['transfer_syntax'])}; VOI {_counts(d['voi'])}; "
                     f"frame {d['frame']} ({d['multi_frame_files']} multi-frame files)")
    for name, sp in s["splits"].items():
        parts = [f"{sp['images']} images"]
        if sp.get("patients") is not None:
            parts.append(f"{sp['patients']} patients")
        parts.append("per class: " + ", ".join(f"{k} {v}" for k, v in sp["class_counts"].items()))
        before = f"range before {_rng(sp['range_before'], '{:.4g}')} (0-255 scale)"
        if sp.get("dicom_stored_range") is not None:
            before += f", DICOM stored {_rng(sp['dicom_stored_range'])}"
            if sp.get("dicom_modality_range") is not None:
                before += f", after rescale {_rng(sp['dicom_modality_range'])}"
        parts += [before, f"after {_rng(sp['range_after'], '{:.4f}')}"]
        lines.append(f"{name}: " + "; ".join(parts))
    if s.get("contact_sheet"):
        lines.append(f"contact sheet: {s['contact_sheet']}")
    return lines


def _counts(c: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in c.items())
