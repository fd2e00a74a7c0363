"""Pairing the index's rows with the files in ``storage/``, in flat memory.

Both sides are read in the same order, the relative path's byte order: the
files by a sorted walk, the rows by ``ORDER BY file_path`` a page at a time
(each page on its own short reader connection, so that a swap or a
checkpoint never waits for a long check). A merge of the two streams then
pairs each file with its row, or with nothing, without holding either list.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.index.crawl import ForeignFile, StoredFile, walk_in_path_order
from appliance.index.readers import index_reader
from appliance.storage import Storage

PAGE_ROWS = 2000


@dataclass(frozen=True)
class IndexedFile:
    """What the index says of one stored file."""

    file_path: str
    file_size: int
    sha256: str
    sop_uid: str


@dataclass(frozen=True)
class Pair:
    """A stored file and its index row; either may be missing, not both."""

    stored: StoredFile | None
    indexed: IndexedFile | None


def compare(storage: Storage, index_path: Path) -> Iterator[Pair | ForeignFile]:
    """Yield every stored file and every index row, paired by path.

    Parameters
    ----------
    storage : Storage
        The data folder's storage.
    index_path : pathlib.Path
        The ``index.db`` to compare with.

    Yields
    ------
    Pair or ForeignFile
        In path order; a file the appliance did not name comes unpaired.
    """
    rows = indexed_in_path_order(index_path)
    pending = next(rows, None)
    for file in walk_in_path_order(storage):
        if isinstance(file, ForeignFile):
            yield file
            continue
        while pending is not None and pending.file_path < file.relative:
            yield Pair(None, pending)
            pending = next(rows, None)
        if pending is not None and pending.file_path == file.relative:
            yield Pair(file, pending)
            pending = next(rows, None)
        else:
            yield Pair(file, None)
    while pending is not None:
        yield Pair(None, pending)
        pending = next(rows, None)


def indexed_in_path_order(index_path: Path) -> Iterator[IndexedFile]:
    """Yield the index's rows by ``file_path``, a page per short connection."""
    after = ""
    while True:
        with index_reader(index_path) as conn:
            page = conn.execute(
                "SELECT file_path, file_size, sha256, sop_uid FROM instances"
                " WHERE file_path > ? ORDER BY file_path LIMIT ?",
                (after, PAGE_ROWS),
            ).fetchall()
        if not page:
            return
        for row in page:
            yield IndexedFile(*row)
        after = page[-1][0]


def is_indexed(index_path: Path, file_path: str) -> bool:
    """Tell whether the index has a row for `file_path` right now."""
    with index_reader(index_path) as conn:
        row = conn.execute(
            "SELECT 1 FROM instances WHERE file_path = ?", (file_path,)
        ).fetchone()
    return row is not None


def indexed_copy(index_path: Path, sop_uid: str, sha256: str) -> str | None:
    """Return the path of an indexed file with this UID and content, if any."""
    with index_reader(index_path) as conn:
        row = conn.execute(
            "SELECT file_path FROM instances WHERE sop_uid = ? AND sha256 = ?",
            (sop_uid, sha256),
        ).fetchone()
    return None if row is None else str(row[0])


def count_rows(index_path: Path) -> int:
    """Return how many instance rows the index holds."""
    with index_reader(index_path) as conn:
        return int(conn.execute("SELECT count(*) FROM instances").fetchone()[0])
