"""A snapshot's manifest: every file it holds, with its size and SHA-256.

The manifest is a small SQLite file, ``manifest.db``, with one table::

    files (path TEXT PRIMARY KEY, size INTEGER, sha256 TEXT)

``path`` is relative to the snapshot folder, with ``/`` separators (for
example ``app.db`` or ``storage/2024/05/02/SEQUOIA/1.2.3.<sha256>.dcm``).
Anyone can read it with the ``sqlite3`` tool. The ``COMPLETE`` marker holds
the manifest's own SHA-256, so that a damaged manifest is noticed too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from backup.databases import open_copy, open_private
from backup.errors import TargetFullError
from backup.files import fsync_path

_SCHEMA = """
CREATE TABLE files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of a snapshot."""

    path: str
    size: int
    sha256: str


class Listed(NamedTuple):
    """What a manifest says of one file in a folder it lists (see
    :meth:`Manifest.folder`)."""

    size: int
    sha256: str


class ManifestWriter:
    """Builds a new manifest; nothing counts until :meth:`close`.

    Parameters
    ----------
    path : pathlib.Path
        The new ``manifest.db``, in a snapshot that is not complete yet.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self.bytes = 0
        self._conn = open_private(path)
        self._conn.execute("PRAGMA journal_mode = OFF")
        self._conn.execute("PRAGMA synchronous = OFF")
        self._conn.executescript(_SCHEMA)
        self._conn.execute("BEGIN")

    def add(self, entry: Entry) -> None:
        """Record one file."""
        self._execute(
            "INSERT INTO files (path, size, sha256) VALUES (?, ?, ?)",
            (entry.path, entry.size, entry.sha256),
        )
        self.count += 1
        self.bytes += entry.size

    def add_many(self, entries: list[Entry]) -> None:
        """Record several files at once."""
        try:
            self._conn.executemany(
                "INSERT INTO files (path, size, sha256) VALUES (?, ?, ?)",
                [(entry.path, entry.size, entry.sha256) for entry in entries],
            )
        except sqlite3.Error as exc:
            _raise_if_full(exc, self.path)
            raise
        self.count += len(entries)
        self.bytes += sum(entry.size for entry in entries)

    def replace(self, entry: Entry) -> None:
        """Record a file again, e.g. after it was copied afresh."""
        self._execute(
            "UPDATE files SET size = ?, sha256 = ? WHERE path = ?",
            (entry.size, entry.sha256, entry.path),
        )

    def close(self) -> None:
        """Commit, close and fsync the manifest."""
        self._execute("COMMIT", ())
        self._conn.close()
        fsync_path(self.path)

    def abandon(self) -> None:
        """Close without caring for the contents (the snapshot is dropped)."""
        self._conn.close()

    def _execute(self, sql: str, args: tuple[object, ...]) -> None:
        try:
            self._conn.execute(sql, args)
        except sqlite3.Error as exc:
            _raise_if_full(exc, self.path)
            raise


def _raise_if_full(exc: sqlite3.Error, path: Path) -> None:
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        raise TargetFullError(f"the backup disk is full: cannot write {path}") from exc


class Manifest:
    """An existing manifest, read-only.

    Parameters
    ----------
    path : pathlib.Path
        A snapshot's ``manifest.db``.

    Raises
    ------
    sqlite3.Error
        If it cannot be opened.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = open_copy(path)
        self._conn.execute("SELECT count(*) FROM files").fetchone()

    def lookup(self, path: str) -> Entry | None:
        """Return the entry of one file, or None if it is not listed."""
        row = self._conn.execute(
            "SELECT path, size, sha256 FROM files WHERE path = ?", (path,)
        ).fetchone()
        return Entry(*row) if row else None

    def entries(self) -> Iterator[Entry]:
        """Yield every entry, in path order."""
        for row in self._conn.execute(
            "SELECT path, size, sha256 FROM files ORDER BY path"
        ):
            yield Entry(*row)

    def folder(self, folder: str) -> dict[str, Listed]:
        """Return the files listed directly in `folder`, by name.

        `folder` is relative to the snapshot, without a trailing ``/``
        (``storage/2024/05/02/SEQUOIA``); files in its subfolders are left
        out.
        """
        rows = self._conn.execute(
            "SELECT substr(path, ?), size, sha256 FROM files"
            " WHERE path >= ? AND path < ?",
            (len(folder) + 2, *_folder_range(folder)),
        )
        return {name: Listed(size, sha) for name, size, sha in rows if "/" not in name}

    def count_under(self, folder: str) -> int:
        """Return how many files are listed under `folder` (``storage``)."""
        row = self._conn.execute(
            "SELECT count(*) FROM files WHERE path >= ? AND path < ?",
            _folder_range(folder),
        ).fetchone()
        return int(row[0])

    def random_under(self, folder: str, count: int) -> list[Entry]:
        """Return up to `count` entries under `folder`, picked at random."""
        rows = self._conn.execute(
            "SELECT path, size, sha256 FROM files WHERE path >= ? AND path < ?"
            " ORDER BY random() LIMIT ?",
            (*_folder_range(folder), count),
        )
        return [Entry(*row) for row in rows]

    def totals(self) -> tuple[int, int]:
        """Return the number of files listed and their summed size."""
        row = self._conn.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM files"
        ).fetchone()
        return int(row[0]), int(row[1])

    def close(self) -> None:
        """Close the manifest."""
        self._conn.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _folder_range(folder: str) -> tuple[str, str]:
    # Paths under "storage/" sort from "storage/" up to, not including,
    # "storage0" ("0" follows "/").
    return f"{folder}/", f"{folder}0"
