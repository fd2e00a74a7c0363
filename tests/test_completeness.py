"""A received data set must end where its encoding says, pixel data included."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from appliance.dicom.completeness import (
    IncompleteDataSetError,
    check_complete,
    expected_pixel_bytes,
    extent_of,
)
from appliance.index import UnreadableInstanceError, parse_header
from appliance.storage import PREFIX_BYTES
from tests.conftest import ULTRASOUND_FILES, sample_file

# Beyond the vendor files: big endian, implicit VR, RLE, JPEG-LS, a data set
# encoded in implicit VR under an explicit transfer syntax, and no pixel data.
OTHER_FILES = [
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "SC_rgb_rle.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "SC_rgb_jpeg.dcm",
    "image_dfl.dcm",
    "rtplan.dcm",
]


pytestmark = pytest.mark.filterwarnings("ignore:Expected explicit VR:UserWarning")

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"


def _image() -> Dataset:
    """A 16 x 16 RGB ultrasound image, Explicit VR Little Endian."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = US_IMAGE, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "US"
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation, ds.PlanarConfiguration = 7, 0, 0
    ds.PixelData = bytes(range(256)) * 3
    return ds


def _check(path: Path) -> None:
    """Check `path` by reading it, and from its first bytes: same verdict."""
    size, extent = path.stat().st_size, extent_of(parse_header(path))
    verdicts = []
    for head in (b"", path.read_bytes()[:PREFIX_BYTES]):
        try:
            check_complete(path, size, extent, head)
        except IncompleteDataSetError as exc:
            verdicts.append(str(exc))
        else:
            verdicts.append("")
    assert verdicts[0] == verdicts[1]
    if verdicts[0]:
        raise IncompleteDataSetError(verdicts[0])


def _cut(source: Path, size: int, folder: Path) -> Path:
    cut = folder / f"cut-{size}.dcm"
    cut.write_bytes(source.read_bytes()[:size])
    return cut


def _pixel_offset(path: Path) -> int:
    offset = parse_header(path).pixel_offset
    assert offset is not None
    return offset


def _saved(ds: Dataset, folder: Path) -> Path:
    path = folder / "saved.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("name", [*ULTRASOUND_FILES.values(), *OTHER_FILES])
def test_whole_files_pass(name: str) -> None:
    _check(sample_file(name))


@pytest.mark.parametrize("keep", [4, 7, 11, 12, 100, 767])
def test_native_pixel_data_cut_anywhere_is_refused(tmp_path: Path, keep: int) -> None:
    # The 16 x 16 RGB image: a 12-byte element header, then 768 bytes. (Cut
    # right before its tag, it reads as a data set without pixel data.)
    whole = _saved(_image(), tmp_path)
    cut = _cut(whole, _pixel_offset(whole) + keep, tmp_path)

    # Cut 8 to 11 bytes in, pydicom fails on the header: refused as well.
    with pytest.raises(UnreadableInstanceError):
        _check(cut)


def test_a_vendor_image_cut_in_its_pixel_data_is_refused(tmp_path: Path) -> None:
    source = sample_file(ULTRASOUND_FILES["ge_rgb"])
    cut = _cut(source, _pixel_offset(source) + 12 + 921_599, tmp_path)

    with pytest.raises(IncompleteDataSetError, match="cut short"):
        _check(cut)


def test_native_pixel_data_is_checked_from_the_first_bytes_alone(
    tmp_path: Path,
) -> None:
    whole = _saved(_image(), tmp_path)
    head, size = whole.read_bytes(), whole.stat().st_size
    extent = extent_of(parse_header(whole))
    whole.unlink()  # opening the file now would fail

    check_complete(whole, size, extent, head)
    with pytest.raises(IncompleteDataSetError, match="cut short"):
        check_complete(whole, size - 1, extent, head[:-1])


def test_native_pixel_data_shorter_than_the_image_is_refused(tmp_path: Path) -> None:
    ds = _image()
    ds.PixelData = ds.PixelData[:-2]  # complete in the file, two bytes short

    with pytest.raises(IncompleteDataSetError, match="need 768"):
        _check(_saved(ds, tmp_path))


def test_native_pixel_data_longer_than_the_image_is_accepted(tmp_path: Path) -> None:
    ds = _image()
    ds.PixelData = ds.PixelData + b"\x00\x00"

    _check(_saved(ds, tmp_path))


def test_odd_length_pixel_data_padded_to_even_is_accepted(tmp_path: Path) -> None:
    ds = _image()
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 3, 3, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(9)  # pydicom pads it to 10 on writing

    _check(_saved(ds, tmp_path))


def test_expected_bytes_follow_the_image_pixel_module() -> None:
    ds = Dataset()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated = 5, 5, 1, 1
    ds.NumberOfFrames = 3
    assert expected_pixel_bytes(ds) == 10  # 75 packed bits

    ds.BitsAllocated = 12
    assert expected_pixel_bytes(ds) == 150  # two bytes a sample

    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated = 4, 4, 3, 8
    ds.PhotometricInterpretation = "YBR_FULL_422"
    assert expected_pixel_bytes(ds) == 96  # two samples a pixel, 3 frames

    del ds.Rows
    assert expected_pixel_bytes(ds) is None


def test_encapsulated_pixel_data_cut_in_a_fragment_is_refused(tmp_path: Path) -> None:
    source = sample_file(ULTRASOUND_FILES["sonosite_cine"])
    cut = _cut(source, source.stat().st_size // 2, tmp_path)

    with pytest.raises(IncompleteDataSetError, match="cut short"):
        _check(cut)


def test_encapsulated_pixel_data_without_its_delimiter_is_refused(
    tmp_path: Path,
) -> None:
    # The last 8 bytes are the sequence delimiter (FFFE,E0DD), length 0.
    source = sample_file(ULTRASOUND_FILES["ge_j2k"])
    data = source.read_bytes()
    assert struct.unpack("<HHI", data[-8:]) == (0xFFFE, 0xE0DD, 0)
    cut = _cut(source, len(data) - 8, tmp_path)

    with pytest.raises(IncompleteDataSetError, match="sequence delimiter"):
        _check(cut)


def test_a_data_set_without_pixel_data_cut_in_its_last_element_is_refused(
    tmp_path: Path,
) -> None:
    ds = _image()
    del ds.PixelData
    ds.StudyDescription = "A DESCRIPTION LONG ENOUGH TO CUT"
    whole = _saved(ds, tmp_path)
    _check(whole)

    for missing in (1, 5):
        with pytest.raises(IncompleteDataSetError, match="last element"):
            _check(_cut(whole, whole.stat().st_size - missing, tmp_path))


def test_a_deflated_data_set_is_not_checked() -> None:
    # Its offsets are in the inflated stream; the check cannot use them.
    assert extent_of(parse_header(sample_file("image_dfl.dcm"))) is None
