"""Storage commitment reports the appliance still owes a modality.

A modality that asks for storage commitment (PS3.4 J.3) waits for an
N-EVENT-REPORT; without one it marks the study as not archived. A report is
kept here from the moment it is asked for until it is delivered, so that a
modality switched off for the night, or a restart of the appliance, does not
lose it. Only UIDs and AE titles are kept: nothing that names a patient.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class OwedReport:
    """One report not yet delivered."""

    transaction_uid: str
    requestor_ae: str
    requestor_address: str
    references: list[tuple[str, str]]
    """(SOP Class UID, SOP Instance UID) pairs, in the order asked."""
    asked_at: datetime
    attempts: int


def remember(
    conn: sqlite3.Connection, report: OwedReport, next_attempt_at: datetime
) -> None:
    """Keep `report` until :func:`forget`; a repeated Transaction UID replaces it.

    A modality may ask again with the same Transaction UID (PS3.4 J.3.2.1);
    the newer list of instances is the one to answer.
    """
    conn.execute(
        "INSERT OR REPLACE INTO commitment_reports (transaction_uid, requestor_ae,"
        " requestor_address, instance_refs, asked_at, attempts, next_attempt_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            report.transaction_uid,
            report.requestor_ae,
            report.requestor_address,
            json.dumps(report.references),
            _stamp(report.asked_at),
            report.attempts,
            _stamp(next_attempt_at),
        ),
    )


def forget(conn: sqlite3.Connection, transaction_uid: str) -> None:
    """Drop a report: delivered, or given up."""
    conn.execute(
        "DELETE FROM commitment_reports WHERE transaction_uid = ?", (transaction_uid,)
    )


def postpone(
    conn: sqlite3.Connection, transaction_uid: str, next_attempt_at: datetime
) -> None:
    """Count a failed attempt and set when to try again."""
    conn.execute(
        "UPDATE commitment_reports SET attempts = attempts + 1, next_attempt_at = ?"
        " WHERE transaction_uid = ?",
        (_stamp(next_attempt_at), transaction_uid),
    )


def due(conn: sqlite3.Connection, now: datetime | None) -> list[OwedReport]:
    """Return the reports due at `now` (all of them if None), oldest first."""
    rows = conn.execute(
        "SELECT transaction_uid, requestor_ae, requestor_address, instance_refs,"
        " asked_at, attempts FROM commitment_reports"
        " WHERE ? IS NULL OR next_attempt_at <= ? ORDER BY asked_at",
        (None, None) if now is None else (_stamp(now), _stamp(now)),
    ).fetchall()
    return [
        OwedReport(
            transaction_uid=row[0],
            requestor_ae=row[1],
            requestor_address=row[2],
            references=[(str(c), str(i)) for c, i in json.loads(row[3])],
            asked_at=datetime.fromisoformat(row[4]),
            attempts=int(row[5]),
        )
        for row in rows
    ]


def owed_count(conn: sqlite3.Connection) -> int:
    """Return how many reports are still owed."""
    return int(conn.execute("SELECT count(*) FROM commitment_reports").fetchone()[0])


def _stamp(moment: datetime) -> str:
    # One fixed format in UTC, so that the text sorts as the times do.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
