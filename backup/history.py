"""The backup history in ``app.db``: one row per run, ok or not.

The table is created by the appliance's migration 5 (``backup-history`` in
``appliance/state/schema.py``); this module only reads and appends rows,
with plain SQL, so that it works without the appliance. Where the table does
not exist (an ``app.db`` older than that migration) nothing is recorded and
nothing is read, and a warning says so.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backup.databases import uri
from backup.engine import BackupResult

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
TABLE = "backup_runs"


@dataclass(frozen=True)
class RunRecord:
    """One recorded run."""

    started_at: datetime
    finished_at: datetime
    trigger: str
    target: str
    snapshot: str
    ok: bool
    files: int
    bytes: int
    copied_files: int
    copied_bytes: int
    seconds: float
    error: str


def record_run(app_db: Path, result: BackupResult) -> bool:
    """Append a run to the history; return False if it could not be kept."""
    try:
        with closing(_connect(app_db)) as conn:
            conn.execute(
                f"INSERT INTO {TABLE} (started_at, finished_at, trigger, target,"
                " snapshot, ok, files, bytes, copied_files, copied_bytes, seconds,"
                " error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _utc(result.started_at),
                    _utc(result.finished_at),
                    result.trigger,
                    result.target,
                    result.snapshot,
                    int(result.ok),
                    result.files,
                    result.bytes,
                    result.copied_files,
                    result.copied_bytes,
                    round(result.seconds, 3),
                    result.error,
                ),
            )
    except sqlite3.Error as exc:
        logger.warning("Could not record the backup run in %s: %s", app_db, exc)
        return False
    return True


def recent_runs(app_db: Path, limit: int = 20) -> list[RunRecord]:
    """Return the latest runs, newest first; empty if there is no history."""
    try:
        with closing(_connect(app_db, readonly=True)) as conn:
            rows = conn.execute(
                f"SELECT * FROM {TABLE} ORDER BY started_at DESC, id DESC LIMIT ?",
                (limit,),
            ).fetchall()
    except sqlite3.Error:
        return []
    return [_record(row) for row in rows]


def last_success(app_db: Path) -> RunRecord | None:
    """Return the latest run that made a complete snapshot, or None."""
    try:
        with closing(_connect(app_db, readonly=True)) as conn:
            row = conn.execute(
                f"SELECT * FROM {TABLE} WHERE ok = 1"
                " ORDER BY finished_at DESC, id DESC LIMIT 1"
            ).fetchone()
    except sqlite3.Error:
        return None
    return _record(row) if row else None


def _utc(when: datetime) -> str:
    # Kept in UTC, so that the text sorts in time order across DST changes.
    return when.astimezone(UTC).isoformat(timespec="seconds")


def _connect(app_db: Path, *, readonly: bool = False) -> sqlite3.Connection:
    mode = "ro" if readonly else "rw"
    conn = sqlite3.connect(
        uri(app_db, mode=mode),
        uri=True,
        isolation_level=None,
        timeout=BUSY_TIMEOUT_MS / 1000,
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        started_at=datetime.fromisoformat(row["started_at"]).astimezone(),
        finished_at=datetime.fromisoformat(row["finished_at"]).astimezone(),
        trigger=row["trigger"],
        target=row["target"],
        snapshot=row["snapshot"],
        ok=bool(row["ok"]),
        files=row["files"],
        bytes=row["bytes"],
        copied_files=row["copied_files"],
        copied_bytes=row["copied_bytes"],
        seconds=row["seconds"],
        error=row["error"],
    )
