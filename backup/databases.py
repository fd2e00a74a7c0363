"""Copies of the appliance's SQLite databases, made while it keeps writing.

The copy goes through SQLite's online backup API in a single step: in WAL
mode the source's writers are never blocked, and the copy is the database
as of one transaction. The copy is then switched to a rollback journal so
that it is one self-contained file, closed and fsynced.

The copy and its later checks open the file without file locking (the
``unix-none`` VFS to write, ``immutable=1`` to read): nobody else uses it,
and network shares often implement locks badly or not at all.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path

from backup.errors import TargetFullError
from backup.files import fsync_path

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000


def copy_database(source: Path, target: Path) -> None:
    """Copy the live database `source` into the new file `target`.

    Raises
    ------
    backup.errors.TargetFullError
        If the target's disk is full.
    sqlite3.Error
        If the source cannot be read.
    """
    reader = sqlite3.connect(
        uri(source, mode="rw"), uri=True, timeout=BUSY_TIMEOUT_MS / 1000
    )
    try:
        reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        writer = open_private(target)
        try:
            # The copy counts only once fsynced below, so SQLite need not
            # sync it on the way: that saved most of the copy's time.
            writer.execute("PRAGMA synchronous = OFF")
            reader.backup(writer)
            writer.execute("PRAGMA journal_mode = DELETE")
        finally:
            writer.close()
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise TargetFullError(
                f"the backup disk is full: cannot write {target}"
            ) from exc
        raise
    finally:
        reader.close()
    fsync_path(target)


def open_copy(path: Path) -> sqlite3.Connection:
    """Open a database copy in a snapshot read-only, without locking it."""
    return sqlite3.connect(uri(path, mode="ro", immutable="1"), uri=True)


def open_private(path: Path) -> sqlite3.Connection:
    """Open a new database that only this connection uses, without locks.

    Exclusive locking mode lets a WAL-mode copy switch back to a rollback
    journal without the shared memory that the lock-less VFS lacks.
    """
    conn = sqlite3.connect(uri(path, vfs="unix-none"), uri=True)
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    return conn


def uri(path: Path, **query: str) -> str:
    """Return an SQLite ``file:`` URI for `path`, safely quoted."""
    options = "&".join(f"{key}={value}" for key, value in query.items())
    return f"{path.resolve().as_uri()}?{options}"


def integrity_problem(path: Path) -> str | None:
    """Run ``PRAGMA integrity_check`` on a copy; None when it is sound."""
    try:
        with closing(open_copy(path)) as conn:
            verdict = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    except sqlite3.Error as exc:
        return str(exc)
    return None if verdict == ["ok"] else "; ".join(verdict[:3])


def count_rows(path: Path, table: str) -> int | None:
    """Return a table's row count in a copy, or None if it cannot be read."""
    try:
        with closing(open_copy(path)) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.Error:
        return None
