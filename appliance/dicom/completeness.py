"""Refuse a received data set that did not arrive whole.

pydicom reads a header without complaint when the file ends early: a value
cut short is read as the bytes that are there, and a file that ends inside
its pixel data reads as a whole header. Such a data set (a sender's bug, a
truncated file sent on) would be stored and acknowledged, and its image
would never decode.

The check costs a few small reads whatever the size of the data set. It
needs the file's size and where the pixel data element begins, which the
header parse already knows (:class:`~appliance.index.Header`), and looks at:

- native pixel data (the uncompressed transfer syntaxes): the element's
  header; its value must be in the file in full, and hold at least what
  the Image Pixel module says the frames need (PS3.5 8.1.1, PS3.3 C.7.6.3);
  a longer value (padding to even length, or more) is accepted;
- encapsulated pixel data (PS3.5 A.4): each fragment's item header, up to
  the sequence delimiter, which must lie within the file;
- a data set without pixel data: its last element must end with the file.

The pixels themselves are never read, let alone decoded. Not caught: a
file cut exactly before its pixel data element reads as a whole data set
without pixel data, and elements after the pixel data (mostly trailing
padding) are not looked at.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from appliance.dicom.contexts import UNCOMPRESSED
from appliance.index import (
    Header,
    UnreadableInstanceError,
    header_number,
    header_text,
)

DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian

_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_HEADER_BYTES = 12  # the longest element header (PS3.5 7.1.2)
_ITEM = (0xFFFE, 0xE000)
_SEQUENCE_DELIMITER = (0xFFFE, 0xE0DD)

# Explicit VR elements with a reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR"}
    | {b"UT", b"UV"}
)

# Photometric interpretations whose chroma is halved horizontally, so that a
# pixel takes two samples, not three (PS3.3 C.7.6.3.1.2).
_HALF_CHROMA = frozenset({"YBR_FULL_422", "YBR_PARTIAL_422"})


class IncompleteDataSetError(UnreadableInstanceError):
    """A data set ends before its own encoding says it does."""


@dataclass(frozen=True)
class Extent:
    """What a header says about where its data set ends.

    Attributes
    ----------
    pixel_offset : int or None
        Where the pixel data element begins; None without pixel data.
    implicit_vr, little_endian : bool
        The encoding the data set was read with (a sender may use another
        than its transfer syntax says; pydicom reads what is there).
    pixel_bytes : int or None
        For native pixel data, the bytes the Image Pixel module needs.
    last_element_end : int or None
        Without pixel data, where the element read last ends; None when
        that is a sequence of undefined length, which keeps no end.
    """

    pixel_offset: int | None
    implicit_vr: bool
    little_endian: bool
    pixel_bytes: int | None
    last_element_end: int | None


def extent_of(header: Header) -> Extent | None:
    """Take what :func:`check_complete` needs from a freshly parsed header.

    Call it before anything reads values from the header: pydicom converts
    an element when it is read, and a converted element no longer tells its
    encoding or its length.

    Returns
    -------
    Extent or None
        None when the file cannot be checked: a deflated data set, whose
        offsets are in the inflated stream, or a header with no element
        left in its raw form.
    """
    dataset = header.dataset
    elements = list(dataset.values())  # as read: raw, none converted
    raw = [element for element in elements if isinstance(element, RawDataElement)]
    if not raw or _transfer_syntax(dataset) == DEFLATED:
        return None

    last = max(elements, key=_position)
    last_end = None
    if isinstance(last, RawDataElement) and last.length != _UNDEFINED_LENGTH:
        last_end = int(last.value_tell) + int(last.length)
    native = _transfer_syntax(dataset) in UNCOMPRESSED
    return Extent(
        pixel_offset=header.pixel_offset,
        implicit_vr=bool(raw[0].is_implicit_VR),
        little_endian=bool(raw[0].is_little_endian),
        pixel_bytes=expected_pixel_bytes(dataset) if native else None,
        last_element_end=last_end,
    )


def check_complete(
    path: Path, size: int, extent: Extent | None, head: bytes = b""
) -> None:
    """Check that the data set in `path` ends where its encoding says.

    Parameters
    ----------
    path : pathlib.Path
        The received Part 10 file.
    size : int
        Its size in bytes.
    extent : Extent or None
        From :func:`extent_of`; None checks nothing.
    head : bytes, optional
        The file's first bytes, if at hand: native pixel data whose element
        header lies within them is checked without opening the file.

    Raises
    ------
    IncompleteDataSetError
        If the pixel data, or the last element of a data set without pixel
        data, is cut short.
    """
    if extent is None:
        return
    if extent.pixel_offset is None:
        _check_last_element(extent.last_element_end, size)
        return
    if extent.pixel_offset + _PIXEL_HEADER_BYTES <= len(head):
        offset = extent.pixel_offset
        element_header = head[offset : offset + _PIXEL_HEADER_BYTES]
        length, header_bytes = _pixel_length(element_header, extent)
        if length != _UNDEFINED_LENGTH:
            _check_native_length(size, offset + header_bytes, length, extent)
            return
    with open(path, "rb") as stream:
        _check_pixel_data(stream, size, extent)


def expected_pixel_bytes(dataset: Dataset) -> int | None:
    """The bytes native pixel data needs, from the Image Pixel module.

    Rows x Columns x Samples per Pixel x Number of Frames samples, each of
    ``ceil(BitsAllocated / 8)`` bytes; with Bits Allocated 1 the bits are
    packed, so the total is rounded up to whole bytes (PS3.5 8.1.1). Padding
    to even length is not counted.

    Returns
    -------
    int or None
        None when an attribute it needs is missing or not a count.
    """
    counts = [
        _count(dataset, keyword)
        for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated")
    ]
    frames = _count(dataset, "NumberOfFrames", absent=1)
    if frames is None or None in counts:
        return None
    rows, columns, samples, bits = cast(list[int], counts)

    if samples == 3 and _photometric(dataset) in _HALF_CHROMA:
        samples = 2
    values = rows * columns * samples * frames
    if bits == 1:
        return math.ceil(values / 8)
    return values * math.ceil(bits / 8)


def _check_pixel_data(stream: BinaryIO, size: int, extent: Extent) -> None:
    offset = cast(int, extent.pixel_offset)
    stream.seek(offset)
    length, header_bytes = _pixel_length(stream.read(_PIXEL_HEADER_BYTES), extent)
    value_start = offset + header_bytes
    if length == _UNDEFINED_LENGTH:
        _check_fragments(stream, value_start, size, _endian(extent))
        return
    _check_native_length(size, value_start, length, extent)


def _pixel_length(element_header: bytes, extent: Extent) -> tuple[int, int]:
    return _element_length(element_header, extent.implicit_vr, _endian(extent))


def _endian(extent: Extent) -> str:
    return "<" if extent.little_endian else ">"


def _check_native_length(
    size: int, value_start: int, length: int, extent: Extent
) -> None:
    present = size - value_start
    if present < length:
        raise IncompleteDataSetError(
            f"the Pixel Data is cut short: {present} of its {length} bytes arrived"
        )
    expected = extent.pixel_bytes
    if expected is not None and length < expected:
        raise IncompleteDataSetError(
            f"the Pixel Data holds {length} bytes, but its Rows, Columns, "
            f"Samples per Pixel, Bits Allocated and Number of Frames need {expected}"
        )


def _element_length(head: bytes, implicit: bool, endian: str) -> tuple[int, int]:
    """The value length of the element `head` starts, and its header's size."""
    if implicit:
        needed, layout = 8, "4xI"
    elif head[4:6] in _LONG_VRS:
        needed, layout = 12, "8xI"
    else:
        needed, layout = 8, "6xH"
    if len(head) < needed:
        raise IncompleteDataSetError("the data set ends inside the Pixel Data's header")
    (length,) = struct.unpack_from(endian + layout, head)
    return int(length), needed


def _check_fragments(stream: BinaryIO, start: int, size: int, endian: str) -> None:
    # PS3.5 A.4: a sequence of items (the offset table, then the fragments),
    # closed by a sequence delimiter. Each step reads one 8-byte item header.
    item = struct.Struct(endian + "HHI")
    position, items = start, 0
    while True:
        stream.seek(position)
        head = stream.read(item.size)
        if len(head) < item.size:
            raise IncompleteDataSetError(
                f"the encapsulated Pixel Data is cut short after {items} item(s), "
                "before its sequence delimiter"
            )
        group, element, length = item.unpack(head)
        if (group, element) == _SEQUENCE_DELIMITER:
            return
        if (group, element) != _ITEM or length == _UNDEFINED_LENGTH:
            raise IncompleteDataSetError(
                f"the encapsulated Pixel Data's item {items + 1} is not a fragment"
            )
        position += item.size + length
        items += 1
        if position > size:
            raise IncompleteDataSetError(
                f"the encapsulated Pixel Data is cut short in its item {items}"
            )


def _check_last_element(end: int | None, size: int) -> None:
    # Without pixel data, parsing went on to the end of the file. pydicom
    # takes a value cut short as it is, and drops a header of fewer than
    # eight bytes, so the element read last must end exactly with the file.
    if end is not None and end != size:
        raise IncompleteDataSetError(
            f"the data set is cut short: its last element ends at byte {end}, "
            f"the data at byte {size}"
        )


def _position(element: object) -> int:
    if isinstance(element, RawDataElement):
        return int(element.value_tell)
    return int(getattr(element, "file_tell", None) or 0)


def _transfer_syntax(dataset: Dataset) -> str:
    meta = getattr(dataset, "file_meta", None)
    return str(getattr(meta, "TransferSyntaxUID", "") or "")


def _photometric(dataset: Dataset) -> str:
    try:
        return header_text(dataset, "PhotometricInterpretation")
    except Exception:  # a broken value in a hostile header
        return ""


def _count(dataset: Dataset, keyword: str, absent: int | None = None) -> int | None:
    """A non-negative whole number from the header; `absent` if not there."""
    try:
        if not _has_value(dataset, keyword):
            return absent
        number = header_number(dataset, keyword)
    except Exception:  # a broken value in a hostile header: no expectation
        return None
    return number if number is not None and number >= 0 else None


def _has_value(dataset: Dataset, keyword: str) -> bool:
    element = dataset.get_item(tag_for_keyword(keyword) or 0)
    if element is None:
        return False
    if isinstance(element, RawDataElement):
        return bool(element.value and bytes(element.value).strip(b" \x00"))
    return element.value not in (None, "")
