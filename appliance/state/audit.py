"""The audit trail: who looked at or took which patient's data, when, from where.

Rows are only ever added, each sealed by a hash of the row before it (see
:mod:`appliance.state.audit_chain`). They name the patient by PatientID and
the study by its Study Instance UID, which is what a privacy officer asks
about; this is the one place such identifiers are written outside the DICOM
files and the index (never in the log).
"""

from __future__ import annotations

import getpass
import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance import db
from appliance.state.audit_chain import append


@dataclass(frozen=True)
class AuditEvent:
    """One thing a person did."""

    username: str
    action: str
    address: str = ""
    patient_id: str = ""
    study_uid: str = ""
    object_uid: str = ""
    detail: str = ""


@dataclass(frozen=True)
class AuditEntry:
    """A recorded event with its time and row id."""

    id: int
    at: str
    event: AuditEvent


def record(conn: sqlite3.Connection, event: AuditEvent) -> int:
    """Append one event, chained by hashes to the one before; return its id.

    The row is written in its own ``BEGIN IMMEDIATE`` transaction (see
    :func:`appliance.state.audit_chain.append`), or, when `conn` is inside
    a transaction already, as part of it: the caller's transaction must then
    be a ``BEGIN IMMEDIATE`` one.
    """
    return append(
        conn,
        (
            datetime.now(UTC).isoformat(timespec="milliseconds"),
            event.username,
            event.action,
            event.address,
            event.patient_id,
            event.study_uid,
            event.object_uid,
            event.detail,
        ),
    )


def record_outside_web(
    app_db: Path, action: str, detail: str = "", *, by_system: bool = False
) -> int:
    """Append an event of a command or of the service itself; return its id.

    A command is recorded under the operating system's user name with the
    address ``command line``; the service's own work (the nightly backup)
    under ``appliance``.
    """
    username = "appliance" if by_system else _os_user()
    address = "" if by_system else "command line"
    with closing(db.connect(app_db)) as conn:
        return record(conn, AuditEvent(username, action, address, detail=detail))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def recent(
    conn: sqlite3.Connection, limit: int = 100, username: str | None = None
) -> list[AuditEntry]:
    """Return the newest events first, optionally of one user only."""
    if username is None:
        rows = conn.execute(
            "SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT * FROM audit WHERE username = ? ORDER BY id DESC LIMIT ?",
            (username, limit),
        ).fetchall()
    return [entry_from_row(row) for row in rows]


def entry_from_row(row: sqlite3.Row) -> AuditEntry:
    """Turn one row of the audit table into an :class:`AuditEntry`."""
    return AuditEntry(
        id=int(row["id"]),
        at=row["at"],
        event=AuditEvent(
            username=row["username"],
            action=row["action"],
            address=row["address"],
            patient_id=row["patient_id"],
            study_uid=row["study_uid"],
            object_uid=row["object_uid"],
            detail=row["detail"],
        ),
    )
