"""Write small DICOM files with pydicom for the tests (no fixture files: each test makes its own)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                signed: bool = False, frames: int | None = None, patient_id: str = "P0", **attrs) -> Path:
    """A Secondary Capture object holding ``pixels`` uncompressed (explicit VR little endian).

    ``pixels``: H×W, H×W×3 (RGB / YBR), F×H×W or F×H×W×3 (``frames``=F); uint8/uint16/int16.
    ``attrs``: extra elements by keyword (RescaleSlope, WindowCenter, palette LUTs, ...).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = patient_id, "OT"
    colour = pixels.ndim == (4 if frames else 3)
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    shape = pixels.shape[1:3] if frames else pixels.shape[:2]
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    if frames:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_j2k(path: Path, pixels: np.ndarray, **attrs) -> Path:
    """The same object compressed losslessly as JPEG 2000 (pydicom's compress with pylibjpeg-openjpeg)."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    write_dicom(path, pixels, **attrs)
    ds = pydicom.dcmread(path)
    ds.compress(JPEG2000Lossless)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_jpeg_baseline(path: Path, rgb: np.ndarray, quality: int = 95) -> Path:
    """An 8-bit RGB image as JPEG Baseline (Process 1): Pillow's JPEG encapsulated by pydicom.

    pydicom has no JPEG baseline encoder; Pillow writes YCbCr with 4:2:0 sub-sampling, which is
    what PACS exports carry (photometric YBR_FULL_422).
    """
    import io

    import pydicom
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    write_dicom(path, rgb, photometric="RGB")
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=quality)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    return path
