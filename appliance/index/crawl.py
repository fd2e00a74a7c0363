"""Walking ``storage/`` for the index: in path order, or in order of arrival.

A stored file's path and modification time say everything the index keeps
that its header does not: day of receipt, sender, content hash, and the
receive time (the spool's mtime, which the rename into ``storage/`` keeps).
So :func:`read_record` rebuilds the very record the listener indexed, from
a header-only read and no hashing.

Both walks keep memory flat however many files there are. The path-order
walk holds one folder's listing at a time; it yields paths in the order
SQLite sorts ``file_path`` (byte order), so that it can be merged with an
``ORDER BY file_path`` query. The arrival order is needed to add files in
the order they were first indexed (the first instance of a patient or study
names it); :class:`ArrivalQueue` spills the files to a scratch SQLite file
and reads them back sorted.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from appliance.index.records import InstanceRecord, read_header, record_from_header
from appliance.storage import Storage, StoredName

# storage/YYYY/MM/DD/<source AE>/<name>: a stored file is five levels down.
STORED_DEPTH = 5
_INSERT_CHUNK = 1000


@dataclass(frozen=True)
class StoredFile:
    """A file named the way the appliance stores files."""

    relative: str
    path: Path
    size: int
    mtime: float
    mtime_ns: int
    name: StoredName


@dataclass(frozen=True)
class ForeignFile:
    """A file under ``storage/`` that the appliance did not put there."""

    relative: str
    path: Path


def walk_in_path_order(storage: Storage) -> Iterator[StoredFile | ForeignFile]:
    """Yield every file under ``storage/``, sorted by its relative path.

    Parameters
    ----------
    storage : Storage
        The data folder's storage.

    Yields
    ------
    StoredFile or ForeignFile
        In the byte order of the relative path (``"a-b/x"`` before
        ``"a/x"``), which is SQLite's order for ``ORDER BY file_path``.
    """
    yield from _walk(storage, storage.files_dir, ())


def read_record(file: StoredFile) -> InstanceRecord:
    """Read a stored file's header and build its index record.

    Raises
    ------
    appliance.index.records.UnreadableInstanceError
        If the file is not readable DICOM or lacks a required UID.
    """
    return record_from_header(
        read_header(file.path),
        file_path=file.relative,
        file_size=file.size,
        sha256=file.name.sha256,
        received_at=datetime.fromtimestamp(file.mtime),
        source_ae=file.name.source_ae,
    )


def stored_file(storage: Storage, relative: str) -> StoredFile | None:
    """Describe the stored file at `relative`, or None if it is not there."""
    path = storage.absolute(relative)
    name = storage.parse_name(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    if name is None:
        return None
    return StoredFile(
        relative, path, stat.st_size, stat.st_mtime, stat.st_mtime_ns, name
    )


class ArrivalQueue:
    """Stored files, given in any order, read back in order of arrival.

    The files are kept in a scratch SQLite file (deleted by :meth:`close`),
    in a table whose key is the arrival time, so reading them back needs no
    sort and no memory beyond SQLite's page cache.

    Parameters
    ----------
    storage : Storage
        To rebuild each file's description on the way out.
    scratch : pathlib.Path
        The scratch file; one left by a crash is replaced.
    """

    def __init__(self, storage: Storage, scratch: Path) -> None:
        self._storage = storage
        self._scratch = scratch
        scratch.unlink(missing_ok=True)
        self._conn = sqlite3.connect(scratch, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = OFF")
        self._conn.execute("PRAGMA synchronous = OFF")
        self._conn.execute(
            "CREATE TABLE files (mtime_ns INTEGER, relative TEXT, mtime REAL,"
            " size INTEGER, PRIMARY KEY (mtime_ns, relative)) WITHOUT ROWID"
        )
        self._pending: list[tuple[int, str, float, int]] = []
        self.count = 0

    def add(self, file: StoredFile) -> None:
        """Queue one file."""
        self._pending.append((file.mtime_ns, file.relative, file.mtime, file.size))
        self.count += 1
        if len(self._pending) >= _INSERT_CHUNK:
            self._flush()

    def __iter__(self) -> Iterator[StoredFile]:
        """Yield the queued files, oldest first (ties by path)."""
        self._flush()
        rows = self._conn.execute(
            "SELECT mtime_ns, relative, mtime, size FROM files"
            " ORDER BY mtime_ns, relative"
        )
        for mtime_ns, relative, mtime, size in rows:
            path = self._storage.absolute(relative)
            name = self._storage.parse_name(path)
            if name is not None:
                yield StoredFile(relative, path, size, mtime, mtime_ns, name)

    def close(self) -> None:
        """Close and delete the scratch file."""
        self._conn.close()
        self._scratch.unlink(missing_ok=True)

    def _flush(self) -> None:
        if not self._pending:
            return
        self._conn.execute("BEGIN")
        self._conn.executemany(
            "INSERT OR IGNORE INTO files VALUES (?, ?, ?, ?)", self._pending
        )
        self._conn.execute("COMMIT")
        self._pending.clear()


def _walk(
    storage: Storage, folder: Path, parts: tuple[str, ...]
) -> Iterator[StoredFile | ForeignFile]:
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    entries.sort(key=_path_order)

    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(storage, Path(entry.path), (*parts, entry.name))
        elif entry.is_file(follow_symlinks=False):
            yield _describe(storage, entry, (*parts, entry.name))


def _path_order(entry: os.DirEntry[str]) -> str:
    # A folder sorts as its name plus "/", the way its files' paths compare.
    return entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name


def _describe(
    storage: Storage, entry: os.DirEntry[str], parts: tuple[str, ...]
) -> StoredFile | ForeignFile:
    relative = "/".join(parts)
    path = Path(entry.path)
    name = storage.parse_name(path) if len(parts) == STORED_DEPTH else None
    if name is None:
        return ForeignFile(relative, path)
    stat = entry.stat(follow_symlinks=False)
    return StoredFile(
        relative, path, stat.st_size, stat.st_mtime, stat.st_mtime_ns, name
    )
