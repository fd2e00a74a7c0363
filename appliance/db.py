"""SQLite plumbing shared by the index and the state database.

Both databases follow the same rules: WAL journal, ``synchronous=FULL`` so a
committed row survives a power cut, ``busy_timeout`` and ``foreign_keys`` on
every connection, and schema changes as numbered, forward-only migrations
recorded in the database itself (table ``schema_migrations`` and
``PRAGMA user_version``). Code never opens a database whose version is newer
than the last migration it knows.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance.errors import SchemaTooNewError

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class Migration:
    """One forward step of a schema: its number, a name and its SQL script."""

    version: int
    name: str
    sql: str


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a connection with the pragmas every connection needs.

    Parameters
    ----------
    path : pathlib.Path
        The database file.
    readonly : bool
        Open with ``mode=ro``, for readers that must never write.

    Returns
    -------
    sqlite3.Connection
        In autocommit mode (``isolation_level=None``): callers open their
        transactions explicitly, writers with ``BEGIN IMMEDIATE``.
    """
    mode = "ro" if readonly else "rwc"
    conn = sqlite3.connect(
        f"file:{path}?mode={mode}",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
        timeout=BUSY_TIMEOUT_MS / 1000,
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    """Return the schema version recorded in the database (0 when new)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(
    conn: sqlite3.Connection, migrations: Sequence[Migration], label: str
) -> int:
    """Bring a database up to the newest migration, in WAL mode.

    Parameters
    ----------
    conn : sqlite3.Connection
        A writable connection from :func:`connect`.
    migrations : Sequence[Migration]
        Numbered 1, 2, 3, ... in order.
    label : str
        The database's name for messages, e.g. ``"index.db"``.

    Returns
    -------
    int
        The version after migrating.

    Raises
    ------
    SchemaTooNewError
        If the database is newer than the last known migration.
    """
    known = migrations[-1].version if migrations else 0
    current = schema_version(conn)
    if current > known:
        raise SchemaTooNewError(
            f"{label} has schema version {current}, but this appliance knows "
            f"only up to {known}; it was written by a newer version"
        )

    conn.execute("PRAGMA journal_mode = WAL")
    for migration in migrations:
        if migration.version <= current:
            continue
        _apply(conn, migration)
        logger.info(
            "Migrated %s to version %d (%s)", label, migration.version, migration.name
        )
    return max(current, known)


def _apply(conn: sqlite3.Connection, migration: Migration) -> None:
    # executescript commits on its own, so the script and its record are
    # wrapped in one explicit transaction to stay all-or-nothing.
    applied_at = datetime.now(UTC).isoformat(timespec="seconds")
    script = (
        "BEGIN IMMEDIATE;\n"
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL);\n"
        f"{migration.sql}\n"
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES"
        f" ({migration.version}, '{migration.name}', '{applied_at}');\n"
        f"PRAGMA user_version = {migration.version};\n"
        "COMMIT;"
    )
    try:
        conn.executescript(script)
    except sqlite3.Error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
