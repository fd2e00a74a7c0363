"""A ZIP archive written as it is sent, never held whole in memory or on disk.

:class:`zipfile.ZipFile` writes into a pipe that the response's generator
empties after every chunk, so memory stays at about one chunk whatever the
size of the study. Members are stored, not deflated: DICOM pixel data is
mostly compressed already. Without seeking, each member's sizes and CRC
follow its data in a data descriptor (APPNOTE 4.3.9), and ZIP64 is used so
that clips over 4 GB still fit.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

CHUNK_BYTES = 1 << 20


class _Pipe(io.RawIOBase):
    """A write-only, unseekable buffer that the generator drains."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._chunks.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def stream_zip(members: Iterable[tuple[str, Path]]) -> Iterator[bytes]:
    """Yield a ZIP of `members` (name in the archive, file) piece by piece.

    Raises
    ------
    OSError
        If a member cannot be read; the client then sees a cut-off download.
    """
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, path in members:
            info = zipfile.ZipInfo(name, _timestamp(path))
            info.compress_type = zipfile.ZIP_STORED
            with (
                path.open("rb") as source,
                archive.open(info, "w", force_zip64=True) as target,
            ):
                while chunk := source.read(CHUNK_BYTES):
                    target.write(chunk)
                    yield pipe.drain()
            yield pipe.drain()
    yield pipe.drain()


def _timestamp(path: Path) -> tuple[int, int, int, int, int, int]:
    moment = datetime.fromtimestamp(path.stat().st_mtime)
    moment = max(moment, datetime(1980, 1, 1))
    return (
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
    )
