"""One DICOM file -> the image a radiologist would see, as float32 in [0, 1].

:func:`read_dicom` decodes a single file on its own (a lazy or streaming dataset can call it per
item); :func:`probe_dicom` reads only the header. Decoding uses pydicom's own functions, in the
order of the DICOM grayscale pipeline (PS3.3 C.11, PS3.4 N.2):

1. pixel data: ``pydicom.pixels.pixel_array(ds, index=frame)``: only the requested frame of a
   multi-frame object (default the first); compressed transfer syntaxes through pydicom's plugins
   (JPEG 2000: pylibjpeg-openjpeg; JPEG baseline/extended: Pillow; RLE: pydicom). YBR_FULL and
   YBR_FULL_422 are converted to RGB there by pydicom (``convert_color_space``).
2. grayscale (MONOCHROME1/2): the Modality LUT (``apply_modality_lut``: Rescale Slope/Intercept or
   a Modality LUT Sequence), kept as float64: a 12- or 16-bit image is never cut to 8 bits here.
   An enhanced multi-frame object's rescale and window are read from the frame's functional groups
   (Pixel Value Transformation, Frame VOI LUT: per-frame, else shared) when the top level has none;
3. the VOI (``apply_voi_lut``): the file's VOI LUT Sequence (preferred) or Window Center/Width;
   ``window=(C, W)`` replaces both with that linear window; ``window="minmax"`` takes each image's
   own range; a file with neither is shown over the full range its Bits Stored allow (after the
   rescale), which can look dark: ``edgekd data inspect`` shows it, ``--window`` fixes it;
4. normalisation to [0, 1] by the output range of that VOI step (the window's or LUT's), then
   MONOCHROME1 inverted (``1 - x``: its lowest value is white). Presentation LUTs are not applied.
5. colour: RGB (and YBR converted to RGB) divided by ``2**BitsStored - 1``; PALETTE COLOR through
   ``apply_color_lut`` (divided by the LUT's own maximum, 255 or 65535).

A file that cannot be read or decoded raises a one-line :class:`~edgekd.errors.DataError` naming it
and the reason. pydicom (and the codecs) are imported only here, when a DICOM file is read.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._limits import limits
from ..errors import DataError
from ._base import shown

Window = tuple[float, float] | str | None  # (center, width), "minmax", or None: the file's own VOI
GRAY = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")  # RGB once pydicom / the codec decoded them
PALETTE = "PALETTE COLOR"
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")
_FIX = "re-export it from the PACS (uncompressed or JPEG 2000), or remove it from the manifest"


@dataclass
class DicomHeader:
    """What :func:`probe_dicom` reads without decoding pixels."""

    photometric: str
    size: tuple[int, int]  # (rows, columns)
    samples: int
    frames: int
    bits_stored: int
    transfer_syntax: str

    @property
    def channels(self) -> int:
        return 1 if self.photometric in GRAY else 3


@dataclass
class DicomInfo:
    """What :func:`decode_dicom` did to one file (for ``Dataset.extra`` and ``edgekd data inspect``)."""

    photometric: str
    transfer_syntax: str
    frames: int
    stored_range: tuple[float, float]  # of the decoded frame, before any LUT
    modality_range: tuple[float, float] | None  # after the Modality LUT / rescale (grayscale only)
    voi: str  # "file VOI LUT", "file window C/W", "window C/W", "minmax", "full range", "colour", "palette"


@dataclass
class DicomSummary:
    """Counts over the files of a dataset (``Dataset.extra['dicom']``)."""

    photometric: Counter = field(default_factory=Counter)
    transfer_syntax: Counter = field(default_factory=Counter)
    voi: Counter = field(default_factory=Counter)
    multi_frame: int = 0
    stored_range: list[float] = field(default_factory=lambda: [float("inf"), float("-inf")])
    modality_range: list[float] = field(default_factory=lambda: [float("inf"), float("-inf")])

    def add(self, info: DicomInfo) -> None:
        self.photometric[info.photometric] += 1
        self.transfer_syntax[info.transfer_syntax] += 1
        self.voi[info.voi] += 1
        self.multi_frame += info.frames > 1
        for acc, rng in ((self.stored_range, info.stored_range), (self.modality_range, info.modality_range)):
            if rng is not None:
                acc[0], acc[1] = min(acc[0], rng[0]), max(acc[1], rng[1])

    def merge(self, other: DicomSummary) -> None:
        for mine, theirs in ((self.photometric, other.photometric), (self.transfer_syntax, other.transfer_syntax),
                             (self.voi, other.voi)):
            mine.update(theirs)
        self.multi_frame += other.multi_frame
        for acc, rng in ((self.stored_range, other.stored_range), (self.modality_range, other.modality_range)):
            acc[0], acc[1] = min(acc[0], rng[0]), max(acc[1], rng[1])

    def to_dict(self) -> dict:
        def rng(r: list[float]) -> list[float] | None:
            return None if r[0] > r[1] else [float(r[0]), float(r[1])]

        return {"files": sum(self.photometric.values()), "photometric": dict(self.photometric),
                "transfer_syntax": dict(self.transfer_syntax), "voi": dict(self.voi),
                "multi_frame_files": self.multi_frame, "stored_range": rng(self.stored_range),
                "modality_range": rng(self.modality_range)}


def is_dicom(path: Path) -> bool:
    """A ``.dcm``/``.dicom`` name, or any file with the ``DICM`` marker at byte 128 (PACS exports often have no extension)."""
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def check_window(window: Window) -> Window:
    """A valid window option, or a one-line DataError saying what to pass."""
    if window is None or window == "minmax":
        return window
    if isinstance(window, (tuple, list)) and len(window) == 2 and all(isinstance(v, (int, float)) for v in window):
        c, w = float(window[0]), float(window[1])
        if np.isfinite(c) and np.isfinite(w) and w >= 1:
            return (c, w)
    raise DataError(f"window {window!r} is not valid: pass --window C,W (center, width >= 1, e.g. 40,400 for "
                    "soft tissue CT) or --window minmax")


def check_frame(frame: int) -> int:
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0:
        raise DataError(f"frame {frame!r} is not valid: pass --frame N with N >= 0 (0 is the first frame)")
    return int(frame)


def _fail(name: str, reason: str, fix: str = _FIX) -> DataError:
    return DataError(f"cannot decode DICOM file {shown(name)} ({shown(reason, 200)}): {fix}")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read(path: Path, name: str, header_only: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=header_only)
    except InvalidDicomError:
        raise _fail(name, "not a DICOM file: no 'DICM' marker at byte 128") from None
    except FileNotFoundError:
        raise DataError(f"DICOM file {shown(name)} not found: check the manifest's file column") from None
    except Exception as exc:  # truncated files raise many types from deep inside pydicom
        raise _fail(name, _reason(exc)) from exc


def _header(ds, name: str) -> DicomHeader:
    missing = [k for k in ("PhotometricInterpretation", "Rows", "Columns") if k not in ds]
    if missing:
        what = "no pixel data" if "PixelData" not in ds and "Rows" not in ds else f"no {', '.join(missing)}"
        raise _fail(name, f"{what} (not an image: a report, a structured report or a presentation state?)",
                    "list only image objects in the manifest")
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        head = DicomHeader(photometric=str(ds.PhotometricInterpretation).strip().upper(),
                           size=(int(ds.Rows), int(ds.Columns)), samples=int(ds.get("SamplesPerPixel", 1) or 1),
                           frames=int(ds.get("NumberOfFrames", 1) or 1), bits_stored=int(ds.get("BitsStored", 8) or 8),
                           transfer_syntax=ts.name if ts is not None else "unknown")
    except (TypeError, ValueError) as exc:
        raise _fail(name, f"malformed image header ({_reason(exc)})") from exc
    if head.photometric not in GRAY + COLOUR + (PALETTE,):
        raise _fail(name, f"photometric interpretation {head.photometric} is not supported (MONOCHROME1/2, RGB, "
                    "YBR_FULL, YBR_FULL_422, YBR_ICT/RCT, PALETTE COLOR)", "convert it to one of these")
    side = limits().max_image_side
    if max(head.size) > side:
        raise DataError(f"DICOM file {shown(name)} is {head.size[0]}×{head.size[1]}, over the {side}-pixel side "
                        "limit: downscale it, or raise EDGEKD_MAX_IMAGE_SIDE")
    if min(head.size) < 1:
        raise _fail(name, f"the header says {head.size[0]}×{head.size[1]} pixels")
    return head


def _frame_exists(head: DicomHeader, frame: int, name: str) -> None:
    if check_frame(frame) >= head.frames:
        raise DataError(f"DICOM file {shown(name)} has {head.frames} frame(s), so --frame {frame} does not exist: "
                        f"pass --frame 0..{head.frames - 1}")


def probe_dicom(path: str | Path, *, frame: int = 0, name: str | None = None) -> DicomHeader:
    """The header of one DICOM file (photometric, size, frames), pixels not read; ``frame`` must exist."""
    path = Path(path)
    name = name or str(path)
    head = _header(_read(path, name, header_only=True), name)
    _frame_exists(head, frame, name)
    return head


_FRAME_GROUPS = (  # enhanced multi-frame objects keep these per frame (or shared), not at the top level
    ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept", "RescaleType")),
    ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction")),
)


def _lift_frame_groups(ds, frame: int) -> None:
    """Copy an enhanced object's rescale and window for ``frame`` (its per-frame group, else the shared one)
    to the top level, where pydicom's Modality and VOI LUT functions read them; top-level values win."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    sources = ([per_frame[frame]] if frame < len(per_frame) else []) + ([shared[0]] if shared else [])
    for seq, keys in _FRAME_GROUPS:
        if any(k in ds for k in keys[:2]):
            continue
        for group in sources:
            items = group.get(seq) or []
            if items and all(k in items[0] for k in keys[:2]):
                for k in keys:
                    if k in items[0]:
                        setattr(ds, k, items[0][k].value)
                break


def _output_range(values: np.ndarray) -> tuple[float, float]:
    return float(np.min(values)), float(np.max(values))


def _gray(arr: np.ndarray, ds, window: Window) -> tuple[np.ndarray, tuple[float, float], str, tuple[float, float]]:
    """Modality LUT then VOI with pydicom's functions; returns (values, their output range, voi name, modality range)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(arr, ds).astype(np.float64, copy=False)
    modality = (float(values.min()), float(values.max()))
    bits = int(ds.get("BitsStored", 16) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if window == "minmax":
        return values, modality, "minmax", modality
    if isinstance(window, tuple):
        c, w = window
        for key in ("VOILUTSequence", "VOILUTFunction"):
            if key in ds:
                del ds[key]
        ds.WindowCenter, ds.WindowWidth = c, w
        voi = f"window {c:g}/{w:g}"
    elif ds.get("VOILUTSequence"):
        voi = "file VOI LUT"
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        wc, ww = ds["WindowCenter"], ds["WindowWidth"]
        first = (lambda e: e.value[0] if e.VM > 1 else e.value)
        voi = f"file window {float(first(wc)):g}/{float(first(ww)):g}"
    else:
        # no VOI at all: the full range the stored bits allow, through the same Modality LUT
        domain = np.arange(lo, hi + 1) if bits <= 16 else np.array([lo, hi])
        return values, _output_range(apply_modality_lut(domain, ds)), "full range", modality
    if voi == "file VOI LUT":
        item = ds.VOILUTSequence[0]
        entries, first_map = int(item.LUTDescriptor[0]) or 2**16, int(item.LUTDescriptor[1])
        out_range = _output_range(apply_voi_lut(np.arange(first_map, first_map + entries), ds))
        # the LUT indexes integer values: the rescaled values are rounded to the nearest input value first
        return apply_voi_lut(np.rint(values).astype(np.int64), ds).astype(np.float64), out_range, voi, modality
    # a linear/sigmoid window maps everything into its output range: its two extremes give that range
    with np.errstate(over="ignore"):
        out_range = _output_range(apply_voi_lut(np.array([-1e300, 1e300]), ds))
    return apply_voi_lut(values, ds), out_range, voi, modality


def decode_dicom(path: str | Path, *, window: Window = None, frame: int = 0,
                 name: str | None = None) -> tuple[np.ndarray, DicomInfo]:
    """(pixels, info): float32 in [0, 1], H×W (grayscale) or H×W×3 (colour), and what was done to get them."""
    from pydicom.pixels import apply_color_lut, pixel_array

    path = Path(path)
    name = name or str(path)
    window = check_window(window)
    ds = _read(path, name, header_only=False)
    head = _header(ds, name)
    _frame_exists(head, frame, name)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise _fail(name, "no pixel data", "list only image objects in the manifest")
    try:
        arr = pixel_array(ds, index=frame)  # raw=False: YBR_FULL / YBR_FULL_422 -> RGB by pydicom
    except Exception as exc:
        reason = _reason(exc)
        if "missing dependencies" in reason or "No pixel data decoders" in reason:
            raise _fail(name, f"no decoder is installed for its transfer syntax, {head.transfer_syntax}",
                        "install pylibjpeg-libjpeg (JPEG Lossless, JPEG-LS; GPL-3.0) or pyjpegls (JPEG-LS), or "
                        "re-export it uncompressed or as JPEG 2000") from exc
        raise _fail(name, reason) from exc
    stored = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    try:
        if head.photometric in GRAY:
            _lift_frame_groups(ds, frame)
            if arr.ndim != 2:
                raise ValueError(f"grayscale frame decoded as {arr.shape}")
            values, (lo, hi), voi, modality = _gray(arr, ds, window)
            x = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
            x = np.clip(x, 0.0, 1.0)
            if head.photometric == "MONOCHROME1":
                x = 1.0 - x
        elif head.photometric == PALETTE:
            rgb = apply_color_lut(arr, ds)
            x, voi, modality = rgb.astype(np.float64) / float(np.iinfo(rgb.dtype).max), "palette", None
        else:
            if arr.ndim != 3 or arr.shape[2] != 3:
                raise ValueError(f"colour frame decoded as {arr.shape}")
            x, voi, modality = arr.astype(np.float64) / float(2**head.bits_stored - 1), "colour", None
    except DataError:
        raise
    except Exception as exc:  # a LUT that does not fit the data, a width < 1, ...
        raise _fail(name, _reason(exc), "fix its VOI/LUT attributes, or pass --window C,W") from exc
    if not np.isfinite(x).all():
        raise _fail(name, "the pixel values are NaN or infinite after the rescale")
    info = DicomInfo(head.photometric, head.transfer_syntax, head.frames, stored, modality, voi)
    return np.clip(x, 0.0, 1.0).astype(np.float32), info


def read_dicom(path: str | Path, window: Window = None, *, frame: int = 0, name: str | None = None) -> np.ndarray:
    """One DICOM file as float32 in [0, 1]: H×W (grayscale) or H×W×3 (colour); see the module docstring."""
    return decode_dicom(path, window=window, frame=frame, name=name)[0]
