"""Performed procedure steps: what the modality reports it did (MPPS).

Each Modality Performed Procedure Step SOP Instance (PS3.4 F.7) is one row,
with the data set the modality last set, linked to the worklist entries its
Scheduled Step Attribute Sequence names. Creating a step marks its entries
IN PROGRESS; completing or discontinuing it marks them so too.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from appliance.state.worklist import Status, set_status


class DuplicateStepError(ValueError):
    """An MPPS instance with this SOP Instance UID already exists."""


@dataclass(frozen=True)
class PerformedStep:
    """One MPPS instance as stored."""

    sop_instance_uid: str
    status: Status
    calling_ae: str
    attributes: str
    """The step's data set in the DICOM JSON model (PS3.18 F.2)."""
    created_at: str
    updated_at: str
    worklist_ids: tuple[int, ...]


def create_step(
    conn: sqlite3.Connection,
    sop_instance_uid: str,
    calling_ae: str,
    attributes: str,
    worklist_ids: list[int],
) -> PerformedStep:
    """Record a new step IN PROGRESS and mark its entries so, atomically.

    Raises
    ------
    DuplicateStepError
        If the SOP Instance UID is already known (PS3.4 F.7.2.1.2, 0x0111).
    """
    now = _now()
    conn.execute("BEGIN IMMEDIATE")
    try:
        cursor = conn.execute(
            "INSERT INTO performed_steps (sop_instance_uid, status, calling_ae,"
            " attributes, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                sop_instance_uid,
                Status.IN_PROGRESS.value,
                calling_ae,
                attributes,
                now,
                now,
            ),
        )
        step_ref = int(cursor.lastrowid or 0)
        conn.executemany(
            "INSERT INTO performed_step_links (step_ref, worklist_ref) VALUES (?, ?)",
            [(step_ref, entry_id) for entry_id in worklist_ids],
        )
        set_status(conn, worklist_ids, Status.IN_PROGRESS)
        conn.execute("COMMIT")
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK")
        raise DuplicateStepError(f"MPPS {sop_instance_uid} already exists") from None
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    step = get_step(conn, sop_instance_uid)
    assert step is not None
    return step


def update_step(
    conn: sqlite3.Connection, sop_instance_uid: str, status: Status, attributes: str
) -> None:
    """Store a step's new data set and status; a final status ends its entries.

    The caller has checked that the step exists and is still IN PROGRESS.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "UPDATE performed_steps SET status = ?, attributes = ?, updated_at = ?"
            " WHERE sop_instance_uid = ?",
            (status.value, attributes, _now(), sop_instance_uid),
        )
        if status is not Status.IN_PROGRESS:
            entries = _linked_entries(conn, sop_instance_uid)
            set_status(conn, entries, status)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def get_step(conn: sqlite3.Connection, sop_instance_uid: str) -> PerformedStep | None:
    """Return one step, or None."""
    row = conn.execute(
        "SELECT * FROM performed_steps WHERE sop_instance_uid = ?",
        (sop_instance_uid,),
    ).fetchone()
    if row is None:
        return None
    return _step(row, _linked_entries(conn, sop_instance_uid))


def steps_for_entry(conn: sqlite3.Connection, entry_id: int) -> list[PerformedStep]:
    """Return the steps that report on one worklist entry, oldest first."""
    rows = conn.execute(
        "SELECT s.* FROM performed_steps s"
        " JOIN performed_step_links l ON l.step_ref = s.id"
        " WHERE l.worklist_ref = ? ORDER BY s.id",
        (entry_id,),
    ).fetchall()
    return [_step(row, _linked_entries(conn, row["sop_instance_uid"])) for row in rows]


def _linked_entries(conn: sqlite3.Connection, sop_instance_uid: str) -> list[int]:
    rows = conn.execute(
        "SELECT l.worklist_ref FROM performed_step_links l"
        " JOIN performed_steps s ON s.id = l.step_ref"
        " WHERE s.sop_instance_uid = ? ORDER BY l.worklist_ref",
        (sop_instance_uid,),
    ).fetchall()
    return [int(row[0]) for row in rows]


def _step(row: sqlite3.Row, entries: list[int]) -> PerformedStep:
    return PerformedStep(
        sop_instance_uid=row["sop_instance_uid"],
        status=Status(row["status"]),
        calling_ae=row["calling_ae"],
        attributes=row["attributes"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        worklist_ids=tuple(entries),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
