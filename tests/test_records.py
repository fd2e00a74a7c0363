"""Reading headers: from a file, and from the first bytes while data arrives."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from appliance.index.records import (
    describe_header,
    parse_header,
    parse_header_prefix,
    read_header,
    read_header_prefix,
)
from tests.conftest import ULTRASOUND_FILES, every_sample_file, sample_file

FILES = [*ULTRASOUND_FILES.values(), "image_dfl.dcm", "MR_small_bigendian.dcm"]


@pytest.mark.parametrize("name", FILES)
def test_a_prefix_gives_the_whole_header_or_nothing(name: str) -> None:
    data = sample_file(name).read_bytes()
    full = pydicom.dcmread(sample_file(name), stop_before_pixels=True)

    # Cuts through the header, dense where headers usually end, then sparse.
    cuts = [*range(132, 12_000, 29), *range(12_000, 300_000, 1_009)]
    taken = 0
    for cut in (c for c in cuts if c < len(data)):
        header = read_header_prefix(data[:cut], whole_file=False)
        if header is not None:
            assert header == full, f"cut at {cut} passed for a whole header"
            taken += 1

    whole = read_header_prefix(data, whole_file=True)
    assert whole == full
    if name != "image_dfl.dcm":  # deflated: only the whole file will do
        assert taken > 0


def test_a_described_header_matches_the_file_header(
    ultrasound_files: dict[str, Path],
) -> None:
    for path in ultrasound_files.values():
        data = path.read_bytes()[: 256 * 1024]
        early = read_header_prefix(data, whole_file=len(data) == path.stat().st_size)
        if early is None:
            continue
        assert describe_header(early) == describe_header(read_header(path))


def test_raw_fast_path_reads_what_pydicom_converts() -> None:
    # Over every file pydicom and pydicom-data ship (implicit and explicit VR,
    # big endian, odd character sets): describing a header from raw bytes
    # must give what describing it after pydicom's own conversion gives.
    compared = 0
    for path in every_sample_file():
        try:
            fast = describe_header(read_header(path))
        except Exception:
            continue
        converted = read_header(path)
        for _element in converted:  # iterating converts every raw element
            pass
        assert describe_header(converted) == fast, path.name
        compared += 1

    assert compared > 100


@pytest.mark.parametrize("name", FILES)
def test_the_pixel_data_offset_is_found_from_the_file_or_a_prefix(name: str) -> None:
    path = sample_file(name)
    data = path.read_bytes()
    header = parse_header(path)

    whole = parse_header_prefix(data, whole_file=True)
    assert whole is not None and whole.pixel_offset == header.pixel_offset
    if name == "image_dfl.dcm":  # deflated: positions are not in the file
        assert header.pixel_offset is None
        return
    offset = header.pixel_offset
    assert offset is not None
    tag = data[offset : offset + 4]
    assert tag in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # little, big endian
    early = parse_header_prefix(data[: offset + 12], whole_file=False)
    assert early is not None and early.pixel_offset == offset
