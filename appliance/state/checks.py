"""Results of integrity checks (``appliance check`` and the weekly one).

They are kept in ``app.db`` so that the owner sees the last result even after
``index.db`` was rebuilt, and so that a week without a check shows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CheckRecord:
    """One recorded check, as the owner is shown it."""

    started_at: str
    finished_at: str
    trigger: str
    deep: bool
    ok: bool
    counts: Mapping[str, int]
    problems: Sequence[str]
    error: str = ""


def record_check(conn: sqlite3.Connection, record: CheckRecord) -> int:
    """Store a check's result; return its row id."""
    cursor = conn.execute(
        "INSERT INTO integrity_checks (started_at, finished_at, trigger, deep, ok,"
        " counts, problems, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            record.started_at,
            record.finished_at,
            record.trigger,
            int(record.deep),
            int(record.ok),
            json.dumps(dict(record.counts), sort_keys=True),
            "\n".join(record.problems),
            record.error,
        ),
    )
    return int(cursor.lastrowid or 0)


def latest_check(conn: sqlite3.Connection) -> CheckRecord | None:
    """Return the most recent check, or None if none was ever run."""
    row = conn.execute(
        "SELECT * FROM integrity_checks ORDER BY started_at DESC, id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return CheckRecord(
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        trigger=row["trigger"],
        deep=bool(row["deep"]),
        ok=bool(row["ok"]),
        counts=json.loads(row["counts"]),
        problems=[line for line in row["problems"].split("\n") if line],
        error=row["error"],
    )
