"""DICOM decoding (edgekd/data/dicom.py): each case a file written here by pydicom, its decoded
values checked against values computed by hand from the DICOM rules (PS3.3 C.11)."""
from __future__ import annotations

import numpy as np
import pytest

from edgekd.data.dicom import decode_dicom, probe_dicom, read_dicom
from edgekd.errors import DataError

from ._dicom import write_dicom, write_j2k, write_jpeg_baseline

pytest.importorskip("pydicom")

STORED = np.array([[0, 1000], [2000, 4095]], np.uint16)  # 12 bits stored in 16


def test_monochrome2_without_voi_spans_the_stored_bits(tmp_path):
    x = read_dicom(write_dicom(tmp_path / "a.dcm", STORED, bits_stored=12))
    assert x.dtype == np.float32 and x.shape == (2, 2)
    np.testing.assert_allclose(x, STORED / 4095.0, rtol=0, atol=1e-7)  # 16-bit precision kept, not cut to 8 bits


def test_monochrome1_is_inverted(tmp_path):
    x = read_dicom(write_dicom(tmp_path / "a.dcm", STORED, bits_stored=12, photometric="MONOCHROME1"))
    np.testing.assert_allclose(x, 1.0 - STORED / 4095.0, atol=1e-7)
    assert x[0, 0] == 1.0 and x[1, 1] == 0.0  # the lowest stored value is white


def test_rescale_then_the_files_window(tmp_path):
    # HU = 2 * stored - 1024: [-1024, 976, 2976, 7166]; window 1000/2001 (LINEAR): 0 below 0, 1 above 2000
    path = write_dicom(tmp_path / "ct.dcm", STORED, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1024,
                       WindowCenter=1000, WindowWidth=2001)
    x, info = decode_dicom(path)
    expected = np.clip((np.array([[-1024, 976], [2976, 7166]]) - 999.5) / 2000 + 0.5, 0, 1)
    np.testing.assert_allclose(x, expected, atol=1e-6)
    assert info.modality_range == (-1024.0, 7166.0) and info.stored_range == (0.0, 4095.0)
    assert info.voi == "file window 1000/2001"


def test_window_override_replaces_the_files_window(tmp_path):
    path = write_dicom(tmp_path / "ct.dcm", STORED, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1024,
                       WindowCenter=40, WindowWidth=400)
    x, info = decode_dicom(path, window=(3000, 2001))
    np.testing.assert_allclose(x, [[0, 0], [(2976 - 2999.5) / 2000 + 0.5, 1]], atol=1e-6)
    assert info.voi == "window 3000/2001"
    y = read_dicom(path, window="minmax")  # each image's own range
    np.testing.assert_allclose(y, (np.array([[-1024, 976], [2976, 7166]]) + 1024) / 8190, atol=1e-6)


def test_rescale_without_window_uses_the_rescaled_stored_range(tmp_path):
    # signed 16-bit CT, slope 1, intercept -1024: range of the stored bits [-32768, 32767] -> [-33792, 31743]
    px = np.array([[-2000, 0], [1000, 3000]], np.int16)
    x = read_dicom(write_dicom(tmp_path / "s.dcm", px, signed=True, RescaleSlope=1, RescaleIntercept=-1024))
    np.testing.assert_allclose(x, (px.astype(float) - 1024 + 33792) / 65535, atol=1e-6)


def test_voi_lut_sequence_is_applied(tmp_path):
    from pydicom.dataset import Dataset

    lut = Dataset()
    lut.add_new(0x00283002, "US", [4, 0, 8])  # LUT Descriptor: 4 entries from input 0, 8-bit output
    lut.add_new(0x00283006, "US", [0, 51, 204, 255])  # LUT Data
    px = np.array([[0, 1], [2, 3]], np.uint16)
    x, info = decode_dicom(write_dicom(tmp_path / "l.dcm", px, bits_stored=2, VOILUTSequence=[lut]))
    np.testing.assert_allclose(x, [[0, 0.2], [0.8, 1.0]], atol=1e-6)
    assert info.voi == "file VOI LUT"


def test_rgb_and_ybr_full_become_rgb(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [128, 128, 128]]], np.uint8)
    np.testing.assert_allclose(read_dicom(write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB")), rgb / 255, atol=1e-7)
    # YBR_FULL (PS3.3 C.7.6.3.1.2): Y = .299R + .587G + .114B, Cb/Cr centred on 128
    r, g, b = (rgb[..., i].astype(float) for i in range(3))
    ybr = np.stack([.299 * r + .587 * g + .114 * b, -.168736 * r - .331264 * g + .5 * b + 128,
                    .5 * r - .418688 * g - .081312 * b + 128], axis=-1)
    x = read_dicom(write_dicom(tmp_path / "ybr.dcm", np.clip(np.rint(ybr), 0, 255).astype(np.uint8),
                               photometric="YBR_FULL"))
    assert x.shape == (2, 2, 3)
    np.testing.assert_allclose(x * 255, rgb, atol=2.5)  # rounding to 8-bit YCbCr and back


def test_palette_colour_goes_through_its_lut(tmp_path):
    n = 4
    red, green, blue = [0, 65535, 0, 32768], [0, 0, 65535, 32768], [65535, 0, 0, 32768]
    attrs = {f"{c}PaletteColorLookupTableDescriptor": [n, 0, 16] for c in ("Red", "Green", "Blue")}
    for c, lut in (("Red", red), ("Green", green), ("Blue", blue)):
        attrs[f"{c}PaletteColorLookupTableData"] = np.array(lut, "<u2").tobytes()
    px = np.array([[0, 1], [2, 3]], np.uint8)
    x, info = decode_dicom(write_dicom(tmp_path / "p.dcm", px, photometric="PALETTE COLOR", **attrs))
    expected = np.stack([np.array(c)[px] for c in (red, green, blue)], axis=-1) / 65535
    np.testing.assert_allclose(x, expected, atol=1e-6)
    assert info.voi == "palette" and x.shape == (2, 2, 3)


def test_multi_frame_gives_the_first_frame_unless_told(tmp_path):
    frames = np.stack([np.full((3, 3), v, np.uint8) for v in (10, 100, 200)])
    path = write_dicom(tmp_path / "mf.dcm", frames, frames=3)
    np.testing.assert_allclose(read_dicom(path), np.full((3, 3), 10 / 255), atol=1e-7)
    np.testing.assert_allclose(read_dicom(path, frame=2), np.full((3, 3), 200 / 255), atol=1e-7)
    assert probe_dicom(path).frames == 3
    with pytest.raises(DataError, match=r"has 3 frame\(s\), so --frame 3 does not exist: pass --frame 0..2"):
        read_dicom(path, frame=3)


def test_enhanced_multi_frame_rescale_and_window_come_from_the_frames_functional_groups(tmp_path):
    from pydicom.dataset import Dataset

    def group(slope=None, intercept=None, center=None, width=None) -> Dataset:
        g = Dataset()
        if slope is not None:
            t = Dataset()
            t.RescaleSlope, t.RescaleIntercept, t.RescaleType = slope, intercept, "HU"
            g.PixelValueTransformationSequence = [t]
        if center is not None:
            v = Dataset()
            v.WindowCenter, v.WindowWidth = center, width
            g.FrameVOILUTSequence = [v]
        return g

    frames = np.stack([STORED, STORED])
    path = write_dicom(tmp_path / "enh.dcm", frames, frames=2, bits_stored=12,
                       SharedFunctionalGroupsSequence=[group(slope=2, intercept=-1024)],
                       PerFrameFunctionalGroupsSequence=[group(center=1000, width=2001), group(center=3000, width=2001)])
    hu = np.array([[-1024, 976], [2976, 7166]])
    x0, info = decode_dicom(path)
    np.testing.assert_allclose(x0, np.clip((hu - 999.5) / 2000 + 0.5, 0, 1), atol=1e-6)
    assert info.modality_range == (-1024.0, 7166.0) and info.voi == "file window 1000/2001"
    np.testing.assert_allclose(read_dicom(path, frame=1), np.clip((hu - 2999.5) / 2000 + 0.5, 0, 1), atol=1e-6)


def test_jpeg2000_lossless_decodes_exactly(tmp_path):
    px = (np.arange(32 * 32).reshape(32, 32) * 4).astype(np.uint16)
    x, info = decode_dicom(write_j2k(tmp_path / "j2k.dcm", px, bits_stored=12))
    assert "JPEG 2000" in info.transfer_syntax
    np.testing.assert_allclose(x, px / 4095, atol=1e-7)


def test_jpeg_baseline_ybr_422_decodes_to_rgb(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (200, 40, 40)
    rgb[:, 8:] = (40, 40, 200)
    x, info = decode_dicom(write_jpeg_baseline(tmp_path / "jpg.dcm", rgb))
    assert info.transfer_syntax == "JPEG Baseline (Process 1)" and x.shape == (16, 16, 3)
    # lossy: flat areas (away from the edge at column 8) come back within a few levels
    np.testing.assert_allclose(x[:, :5] * 255, rgb[:, :5], atol=6)
    np.testing.assert_allclose(x[:, 11:] * 255, rgb[:, 11:], atol=6)


def test_corrupt_and_non_image_files_are_named_with_the_reason(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom file at all" * 20)
    with pytest.raises(DataError, match=r"cannot decode DICOM file .*junk\.dcm \(not a DICOM file: no 'DICM'"):
        read_dicom(junk)
    good = write_dicom(tmp_path / "cut.dcm", np.zeros((64, 64), np.uint16))
    cut = tmp_path / "truncated.dcm"
    cut.write_bytes(good.read_bytes()[:-3000])  # pixel data cut short
    with pytest.raises(DataError) as e:
        read_dicom(cut)
    msg = str(e.value)
    assert "truncated.dcm" in msg and "cannot decode DICOM file" in msg and "\n" not in msg
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # a structured report: no pixels
    meta.MediaStorageSOPInstanceUID = "1.2.3"
    sr = FileDataset(str(tmp_path / "sr.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    sr.PatientID = "P1"
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    with pytest.raises(DataError, match=r"sr\.dcm \(no pixel data"):
        read_dicom(tmp_path / "sr.dcm")


def test_a_transfer_syntax_without_an_installed_decoder_says_what_to_install(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLosslessSV1

    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    path = write_dicom(tmp_path / "jl.dcm", np.zeros((8, 8), np.uint16), bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + b"\0" * 60])
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DataError, match=r"jl\.dcm \(no decoder is installed for its transfer syntax, JPEG Lossless.*"
                                        r"install pylibjpeg-libjpeg"):
        read_dicom(path)


def test_bad_window_and_frame_options_say_what_to_pass(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", STORED, bits_stored=12)
    with pytest.raises(DataError, match="--window C,W"):
        read_dicom(path, window=(40, 0))
    with pytest.raises(DataError, match="--frame N"):
        read_dicom(path, frame=-1)
