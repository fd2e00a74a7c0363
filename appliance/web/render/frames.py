"""Encapsulated frames read straight from a stored file, without decoding.

For JPEG Baseline the browser decodes the stored frame itself, so the bytes
are sent exactly as the modality encoded them. A file's frames are located
once (PS3.5 A.4: Basic or Extended Offset Table, one fragment per frame, or
JPEG end-of-image markers) and the map kept in memory; stored files never
change, so the map never goes stale.
"""

from __future__ import annotations

import bisect
import functools
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.encaps import parse_basic_offsets, parse_fragments

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
_PIXEL_DATA = b"\xe0\x7f\x10\x00"
_UNDEFINED_LENGTH = b"\xff\xff\xff\xff"
_JPEG_EOI = b"\xff\xd9"

# What a browser decodes to the right colours from a JPEG Baseline stream:
# YCbCr (PS3.5 8.2.1) and single-component grayscale.
PASSTHROUGH_PHOTOMETRIC = frozenset({"YBR_FULL_422", "YBR_FULL", "MONOCHROME2"})

Span = tuple[int, int]


class FrameError(ValueError):
    """A file's encapsulated pixel data cannot be split into its frames."""


@dataclass(frozen=True)
class FrameMap:
    """Where each frame's fragments lie in the file: (offset, length) pairs."""

    frames: tuple[tuple[Span, ...], ...]


def is_passthrough(transfer_syntax_uid: str, photometric: str) -> bool:
    """Tell whether frames can go to the browser exactly as stored."""
    return (
        transfer_syntax_uid == JPEG_BASELINE and photometric in PASSTHROUGH_PHOTOMETRIC
    )


def read_frame(path: Path, index: int, number_of_frames: int) -> bytes:
    """Return the stored bytes of one frame (0-based `index`).

    Raises
    ------
    FrameError
        If the pixel data is not encapsulated or cannot be split.
    IndexError
        If there is no such frame.
    """
    spans = frame_map(str(path), number_of_frames).frames[index]
    parts = []
    with open(path, "rb") as handle:
        for offset, length in spans:
            handle.seek(offset)
            parts.append(handle.read(length))
    return b"".join(parts)


@functools.lru_cache(maxsize=256)
def frame_map(path: str, number_of_frames: int) -> FrameMap:
    """Locate every frame of an encapsulated file (cached per path).

    Raises
    ------
    FrameError
        If the pixel data is not encapsulated or cannot be split.
    """
    with open(path, "rb") as handle:
        header = pydicom.dcmread(handle, stop_before_pixels=True)
        element = handle.read(12)
        if element[:4] != _PIXEL_DATA or element[8:] != _UNDEFINED_LENGTH:
            raise FrameError(f"{Path(path).name}: pixel data is not encapsulated")
        basic = parse_basic_offsets(handle)
        first_item = handle.tell()
        _count, item_offsets = parse_fragments(handle)
        fragments = [_fragment_span(handle, offset) for offset in item_offsets]
        starts = _frame_starts(header, basic, first_item)
        frames = _group(handle, fragments, starts, number_of_frames)
    if len(frames) != number_of_frames:
        raise FrameError(
            f"{Path(path).name}: found {len(frames)} frames,"
            f" expected {number_of_frames}"
        )
    return FrameMap(tuple(tuple(frame) for frame in frames))


def _fragment_span(handle: BinaryIO, item_offset: int) -> Span:
    handle.seek(item_offset + 4)
    (length,) = struct.unpack("<I", handle.read(4))
    return item_offset + 8, length


def _frame_starts(
    header: pydicom.Dataset, basic: list[int], first_item: int
) -> list[int] | None:
    # The Extended Offset Table (7FE0,0001) wins over an empty Basic one.
    extended = header.get("ExtendedOffsetTable")
    if extended is not None:
        offsets = np.frombuffer(extended, dtype="<u8").tolist()
        return [first_item + int(offset) for offset in offsets]
    if basic:
        return [first_item + offset for offset in basic]
    return None


def _group(
    handle: BinaryIO,
    fragments: list[Span],
    starts: list[int] | None,
    number_of_frames: int,
) -> list[list[Span]]:
    if starts is not None:
        frames: list[list[Span]] = [[] for _ in starts]
        for span in fragments:
            item_offset = span[0] - 8
            frame = max(bisect.bisect_right(starts, item_offset) - 1, 0)
            frames[frame].append(span)
        return frames
    if len(fragments) == number_of_frames:
        return [[span] for span in fragments]
    if number_of_frames == 1:
        return [fragments]
    return _group_by_end_marker(handle, fragments)


def _group_by_end_marker(handle: BinaryIO, fragments: list[Span]) -> list[list[Span]]:
    # Several fragments per frame and no offsets: a frame ends with the
    # fragment whose data ends in a JPEG EOI marker (maybe padded by 0x00).
    frames: list[list[Span]] = []
    current: list[Span] = []
    for offset, length in fragments:
        current.append((offset, length))
        handle.seek(offset + max(length - 3, 0))
        tail = handle.read(min(length, 3)).rstrip(b"\x00")
        if tail.endswith(_JPEG_EOI):
            frames.append(current)
            current = []
    if current:
        frames.append(current)
    return frames
