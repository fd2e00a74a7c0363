"""The quick header scan describes a data set as pydicom does, or steps aside.

The listener describes each received instance from the quick scan when it
takes the bytes, and from pydicom otherwise; the two must never disagree,
neither on the index record nor on where the data set ends (which decides
whether a torn transfer is refused).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from appliance.dicom.spooling import Described, describe
from appliance.index import (
    Header,
    UnreadableInstanceError,
    parse_header_prefix,
    records,
    scan_header,
)
from appliance.index.header_scan import WANTED_KEYWORDS
from appliance.storage import PREFIX_BYTES
from tests.conftest import ULTRASOUND_FILES, every_sample_file, sample_file

# Files that end without pixel data, in implicit VR, or with sequences of
# undefined length, beside the vendor ultrasound files.
CUT_FILES = [
    *ULTRASOUND_FILES.values(),
    "reportsi.dcm",
    "CT_small.dcm",
    "rtplan.dcm",
    "MR_small_implicit.dcm",
]

Outcome = Described | tuple[str, str]


def _outcome(header: Header) -> Outcome:
    """What describing `header` gives: its description, or the refusal."""
    try:
        return describe(header)
    except UnreadableInstanceError as exc:
        return type(exc).__name__, str(exc)


def _assert_same_as_pydicom(data: bytes, *, whole_file: bool, label: str) -> bool:
    """Check the scan against pydicom on `data`; return whether it was taken."""
    scanned = scan_header(data, whole_file=whole_file)
    if scanned is None:
        return False
    read = parse_header_prefix(data, whole_file=whole_file)
    assert read is not None, f"{label}: scanned what pydicom cannot read"
    assert _outcome(scanned) == _outcome(read), label
    return True


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on odd values
def test_every_sample_file_is_described_as_pydicom_describes_it() -> None:
    taken = 0
    for path in every_sample_file():
        data = path.read_bytes()
        taken += _assert_same_as_pydicom(data, whole_file=True, label=path.name)
        if len(data) > PREFIX_BYTES:
            prefix = data[:PREFIX_BYTES]
            _assert_same_as_pydicom(prefix, whole_file=False, label=path.name)

    # The scan must serve most files, or the listener gains nothing from it.
    assert taken > 100


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", CUT_FILES)
def test_a_cut_file_is_described_as_pydicom_describes_it(name: str) -> None:
    # A prefix still arriving (whole_file False) and a transfer torn off
    # (True) at every cut: dense through the header, then sparse.
    data = sample_file(name).read_bytes()
    cuts = [*range(0, 4_000, 7), *range(4_000, 300_000, 997)]
    taken = 0
    for cut in (c for c in cuts if c < len(data)):
        for whole_file in (False, True):
            label = f"{name} cut at {cut}, whole_file={whole_file}"
            taken += _assert_same_as_pydicom(
                data[:cut], whole_file=whole_file, label=label
            )
    assert taken > 0


def test_the_vendor_ultrasound_files_take_the_quick_scan(
    ultrasound_files: dict[str, Path],
) -> None:
    for path in ultrasound_files.values():
        data = path.read_bytes()
        prefix = data[:PREFIX_BYTES]
        header = scan_header(prefix, whole_file=len(data) <= PREFIX_BYTES)
        assert header is not None, path.name
        assert header.pixel_offset is not None, path.name


@pytest.mark.parametrize(
    "name",
    ["MR_small_bigendian.dcm", "image_dfl.dcm", "no_meta.dcm", "UN_sequence.dcm"],
)
def test_what_the_scan_does_not_read_is_left_to_pydicom(name: str) -> None:
    # Big endian, deflated, without file meta, a UN sequence (implicit VR
    # inside an explicit VR data set): pydicom reads these.
    data = sample_file(name).read_bytes()
    assert scan_header(data, whole_file=True) is None


def test_an_unknown_value_representation_is_left_to_pydicom() -> None:
    data = bytearray(sample_file("US1_UNCR.dcm").read_bytes())
    header = scan_header(bytes(data), whole_file=True)
    assert header is not None

    first = len(_up_to_data_set(bytes(data)))
    assert data[first + 4 : first + 6].isalpha()
    data[first + 4 : first + 6] = b"QQ"  # a VR no standard has
    assert scan_header(bytes(data), whole_file=True) is None


def test_the_scan_keeps_every_element_a_record_is_built_from() -> None:
    read_by_records = {
        *records._ASCII_TAGS,
        *records._TEXT_TAGS,
        *records._UNSIGNED_TAGS,
    }
    in_file_meta = {
        "MediaStorageSOPClassUID",
        "MediaStorageSOPInstanceUID",
        "TransferSyntaxUID",
    }
    assert read_by_records - in_file_meta <= set(WANTED_KEYWORDS)


def test_sequences_nested_beyond_reason_are_left_to_pydicom() -> None:
    # A hostile sender can nest undefined-length sequences as deep as its
    # bytes allow; the scan must step aside, not raise.
    opening = struct.pack(
        "<HH2sHI", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF
    ) + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    nested = _up_to_data_set(sample_file("US1_UNCR.dcm").read_bytes()) + opening * 5_000

    assert scan_header(nested, whole_file=True) is None


def test_an_unknown_vr_value_of_undefined_length_is_left_to_pydicom() -> None:
    # Its items are in implicit VR inside an explicit VR data set (PS3.5
    # 6.2.2); pydicom guesses the encoding item by item, the scan does not.
    un_sequence = struct.pack(
        "<HH2sHI", 0x0009, 0x1001, b"UN", 0, 0xFFFFFFFF
    ) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)

    data = _up_to_data_set(sample_file("US1_UNCR.dcm").read_bytes()) + un_sequence
    assert scan_header(data, whole_file=True) is None


def _up_to_data_set(data: bytes) -> bytes:
    """Preamble and file meta of a Part 10 file: all before its data set.

    The file meta's group length (an UL value at byte 140) counts the bytes
    after that element (PS3.10 7.1).
    """
    return data[: 144 + int.from_bytes(data[140:144], "little")]
