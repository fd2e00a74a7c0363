"""Finding audit entries: by user, patient, action and date, for the admin.

Dates are UTC dates, like the times the audit trail records. A search pages
backwards from the newest entry; :func:`iterate` walks forwards in batches
by row id, so that an export of a long trail never holds one read
transaction open for its whole length.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from appliance.state.audit import AuditEntry, entry_from_row

EXPORT_COLUMNS = (
    "id",
    "at",
    "username",
    "action",
    "address",
    "patient_id",
    "study_uid",
    "object_uid",
    "detail",
    "row_hash",
)
BATCH = 1000


@dataclass(frozen=True)
class AuditFilter:
    """What to look for; empty fields match everything.

    ``date_from`` and ``date_to`` are inclusive UTC dates.
    """

    username: str = ""
    patient_id: str = ""
    action: str = ""
    date_from: date | None = None
    date_to: date | None = None

    def where(self) -> tuple[str, list[Any]]:
        """Return the SQL conditions (joined by AND) and their parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.username:
            clauses.append("username = ? COLLATE NOCASE")
            params.append(self.username)
        if self.patient_id:
            clauses.append("patient_id = ?")
            params.append(self.patient_id)
        if self.action:
            clauses.append("action = ?")
            params.append(self.action)
        if self.date_from is not None:
            clauses.append("at >= ?")
            params.append(self.date_from.isoformat())
        if self.date_to is not None:
            clauses.append("at < ?")
            params.append((self.date_to + timedelta(days=1)).isoformat())
        return " AND ".join(clauses) or "1", params


def search(
    conn: sqlite3.Connection,
    wanted: AuditFilter,
    before_id: int | None = None,
    limit: int = 200,
) -> list[AuditEntry]:
    """Return up to `limit` matching entries, newest first, older than `before_id`."""
    where, params = wanted.where()
    if before_id is not None:
        where += " AND id < ?"
        params.append(before_id)
    rows = conn.execute(
        f"SELECT * FROM audit WHERE {where} ORDER BY id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [entry_from_row(row) for row in rows]


def iterate(conn: sqlite3.Connection, wanted: AuditFilter) -> Iterator[tuple[Any, ...]]:
    """Yield every matching row, oldest first, as :data:`EXPORT_COLUMNS` values."""
    where, params = wanted.where()
    columns = ", ".join(EXPORT_COLUMNS)
    last = 0
    while True:
        rows = conn.execute(
            f"SELECT {columns} FROM audit WHERE {where} AND id > ? ORDER BY id LIMIT ?",
            (*params, last, BATCH),
        ).fetchall()
        if not rows:
            return
        for row in rows:
            yield tuple(row)
        last = int(rows[-1]["id"])
