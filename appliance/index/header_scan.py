"""Read the few header elements the index needs, without pydicom's full parse.

The listener describes every received instance while the modality waits for
the answer, so the header is read on the path of every C-STORE. pydicom's
``dcmread`` builds a Python object for every element and every sequence item
of a header; on the ultrasound files of ``bench/ingest.py``, reading and
describing a header took 0.8 ms, longer than the fsync it runs beside, and
0.4 ms with this scan (the ingest took 2.00 s instead of 2.25 s, median of
eight rounds taken in turn, the bare receiver 1.35 s). This module
walks the top-level elements of the usual layout with :mod:`struct`, steps
over the values it does not need (sequences included) and hands back a
pydicom :class:`~pydicom.dataset.Dataset` holding only:

- the elements named in :data:`WANTED_TAGS`, still raw (``RawDataElement``,
  exactly as pydicom's own reader leaves them, so that every later step,
  character sets included, is done by the same code as before);
- the data set's last element before the pixel data, so that
  :func:`~appliance.dicom.completeness.extent_of` still finds where a data set
  without pixel data ends.

It takes only what it fully understands: a Part 10 file with its 128-byte
preamble, a file meta group in explicit VR little endian, and a data set in
implicit or explicit VR little endian (every transfer syntax but the big
endian, deflated and private ones). Anything else, or anything odd in the
bytes (an unknown VR, a value running past the data, a command group, a UN
value of undefined length), gives None, and the caller reads the header
with pydicom as before; so a file pydicom reads in some forgiving way is
still read that way.
``tests/test_header_scan.py`` compares both readers over every DICOM file of
pydicom's test data and of the pydicom-data package.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import cast

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag

from appliance.index.records import Header

_PREAMBLE = 128
_MAGIC = b"DICM"
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})

_IMPLICIT_LITTLE = "1.2.840.10008.1.2"
# Transfer syntaxes whose data set is not explicit VR little endian as read
# here: big endian, deflated, and the private ones pydicom knows by name.
_NOT_SCANNED = frozenset(
    {
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.113619.5.2",
        "1.3.46.670589.33.1.4.1",
    }
)

# Value representations (PS3.5 6.2) and those with a 4-byte length (7.1.2).
_VRS = frozenset(
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV "
    "TM UC UI UL UN UR US UT UV".split()
)
_LONG_VRS = frozenset("OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())

_TAG_LENGTH = struct.Struct("<HHI")
_EXPLICIT = struct.Struct("<HH2sH")
_LONG_LENGTH = struct.Struct("<I")

# Elements the index and the completeness check read (records.py and
# completeness.py); tests/test_header_scan.py checks records.py reads no other,
# and compares the completeness check's extents over pydicom's test files.
WANTED_KEYWORDS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "ReferringPhysicianName",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "InstanceNumber",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsAllocated",
    "PhotometricInterpretation",
)
WANTED_TAGS = frozenset(int(tag_for_keyword(name) or 0) for name in WANTED_KEYWORDS)


class _NotScanned(Exception):
    """The bytes are not in the plain layout this module reads."""


def scan_header(data: bytes, *, whole_file: bool) -> Header | None:
    """Read the wanted elements of a Part 10 file from its first bytes.

    Parameters
    ----------
    data : bytes
        The start of the file, or all of it.
    whole_file : bool
        True when `data` is the complete file.

    Returns
    -------
    Header or None
        The wanted elements and the last one, raw, with ``file_meta``, and
        where the pixel data begins. None when the header is not in the
        plain layout described in the module's docstring, or may go on past
        `data`: read it with pydicom then.
    """
    try:
        return _scan(memoryview(data), whole_file)
    except (_NotScanned, struct.error, UnicodeDecodeError, RecursionError):
        # RecursionError: sequences nested thousands deep, as only a broken
        # or hostile sender writes them.
        return None


def _scan(data: memoryview, whole_file: bool) -> Header | None:
    if bytes(data[_PREAMBLE : _PREAMBLE + 4]) != _MAGIC:
        raise _NotScanned
    meta, position = _read_meta(data, _PREAMBLE + 4)
    syntax = _transfer_syntax(meta)
    if syntax is None or syntax in _NOT_SCANNED:
        raise _NotScanned
    implicit = syntax == _IMPLICIT_LITTLE
    _check_first_element(data, position, implicit)

    kept: dict[BaseTag, DataElement | RawDataElement] = {}
    last: tuple[int, str | None, int, int] | None = None
    pixel_offset = None
    end = len(data)
    while position < end:
        if end - position < 8:
            raise _NotScanned  # a torn element header: pydicom decides
        start = position
        tag, vr, length, position = _element_header(data, position, implicit)
        if tag in _PIXEL_TAGS:
            pixel_offset = start
            break
        if tag >> 16 in (0x0000, 0x0002):
            raise _NotScanned
        if length == _UNDEFINED:
            last = (tag, vr, length, position)
            position = _skip_items(data, position, implicit)
            continue
        last = (tag, vr, length, position)
        value_start, position = position, _past(data, position, length)
        if tag in WANTED_TAGS:
            kept[BaseTag(tag)] = _raw(data, tag, vr, length, value_start, implicit)

    if pixel_offset is None and not whole_file:
        return None
    if last is not None and last[0] not in kept:
        # The last element tells extent_of where a data set ends.
        kept[BaseTag(last[0])] = _raw(data, *last, implicit)
    dataset = Dataset(kept)
    dataset.file_meta = FileMetaDataset({element.tag: element for element in meta})
    return Header(dataset, pixel_offset)


def _raw(
    data: memoryview,
    tag: int,
    vr: str | None,
    length: int,
    value_start: int,
    implicit: bool,
) -> RawDataElement:
    """A raw element as pydicom's reader makes it.

    An element of undefined length (a sequence stepped over) keeps no value:
    only its place and length serve, to tell that its end is not known.
    """
    value: bytes | None = b""
    if length == 0:
        value = cast(bytes | None, empty_value_for_VR(vr, raw=True))
    elif length != _UNDEFINED:
        value = bytes(data[value_start : value_start + length])
    return RawDataElement(BaseTag(tag), vr, length, value, value_start, implicit, True)


def _past(data: memoryview, value_start: int, length: int) -> int:
    """Where a value of defined length ends; it must end within `data`."""
    value_end = value_start + length
    if value_end > len(data):
        raise _NotScanned  # cut short, or longer than `data`
    return value_end


def _read_meta(data: memoryview, position: int) -> tuple[list[RawDataElement], int]:
    """Read the file meta group (PS3.10 7.1), always explicit VR little endian."""
    elements = []
    while len(data) - position >= 8:
        (group,) = struct.unpack_from("<H", data, position)
        if group != 0x0002:
            break
        tag, vr, length, value_start = _element_header(data, position, False)
        if length == _UNDEFINED:
            raise _NotScanned
        position = _past(data, value_start, length)
        elements.append(_raw(data, tag, vr, length, value_start, False))
    if not elements:
        raise _NotScanned
    return elements, position


def _transfer_syntax(meta: Iterable[RawDataElement]) -> str | None:
    for element in meta:
        if element.tag == 0x00020010 and element.value is not None:
            return bytes(element.value).decode("ascii").rstrip("\x00 ")
    return None


def _check_first_element(data: memoryview, position: int, implicit: bool) -> None:
    # pydicom reads the data set in the encoding its first element shows,
    # whatever the transfer syntax says; leave such a file to pydicom.
    if len(data) - position < 6:
        return
    vr = bytes(data[position + 4 : position + 6])
    looks_explicit = all(0x40 < byte < 0x5B for byte in vr)
    if looks_explicit == implicit:
        raise _NotScanned


def _element_header(
    data: memoryview, position: int, implicit: bool
) -> tuple[int, str | None, int, int]:
    """Return tag, VR (None if implicit), length and where the value starts."""
    if implicit:
        group, element, length = _TAG_LENGTH.unpack_from(data, position)
        return group << 16 | element, None, length, position + 8

    group, element, raw_vr, length = _EXPLICIT.unpack_from(data, position)
    vr = raw_vr.decode("ascii")
    if vr not in _VRS:
        raise _NotScanned
    if vr in _LONG_VRS:
        (length,) = _LONG_LENGTH.unpack_from(data, position + 8)
        if vr == "UN" and length == _UNDEFINED:
            # Items in implicit VR inside explicit VR (PS3.5 6.2.2), which
            # pydicom reads by guessing per item: leave those to it.
            raise _NotScanned
        return group << 16 | element, vr, length, position + 12
    return group << 16 | element, vr, length, position + 8


def _skip_items(data: memoryview, position: int, implicit: bool) -> int:
    """Step over a value of undefined length: items up to a sequence delimiter.

    A sequence's items hold data sets; encapsulated pixel data's items hold
    fragments. Items of defined length are stepped over whole; an item of
    undefined length is walked element by element up to its delimiter.
    Returns where the value ends.
    """
    end = len(data)
    while True:
        if end - position < 8:
            raise _NotScanned
        group, element, length = _TAG_LENGTH.unpack_from(data, position)
        tag = group << 16 | element
        position += 8
        if tag == _SEQUENCE_END:
            return position
        if tag != _ITEM:
            raise _NotScanned
        if length == _UNDEFINED:
            position = _skip_item_elements(data, position, implicit)
        else:
            position = _past(data, position, length)


def _skip_item_elements(data: memoryview, position: int, implicit: bool) -> int:
    """Step over the elements of an item of undefined length and its delimiter."""
    end = len(data)
    while True:
        if end - position < 8:
            raise _NotScanned
        group, element, length = _TAG_LENGTH.unpack_from(data, position)
        if group << 16 | element == _ITEM_END:
            return position + 8
        _tag, _vr, length, position = _element_header(data, position, implicit)
        if length == _UNDEFINED:
            position = _skip_items(data, position, implicit)
        else:
            position = _past(data, position, length)
