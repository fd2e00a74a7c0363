"""Scheduled procedures: the Modality Worklist the front desk fills in.

Each entry is one Requested Procedure with one Scheduled Procedure Step
(PS3.4 K.6, PS3.3 C.4.10 and C.4.11). Its Study Instance UID is made when
the entry is created, so the images the modality sends for it carry that UID
and link back to the entry.

An entry's status follows the modality's Performed Procedure Step reports
(:mod:`appliance.state.mpps`): SCHEDULED, then IN PROGRESS, then COMPLETED
or DISCONTINUED. Completed, discontinued and stale entries (scheduled more
than a configurable number of days ago) drop off what the modality sees, but
stay in ``app.db`` for the record until someone removes them.
"""

from __future__ import annotations

import enum
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta

from pydicom.uid import generate_uid

from appliance.config import parse_ae_title

_DATE = re.compile(r"^\d{8}$")
_FORBIDDEN = re.compile(r"[\\\x00-\x1f]")
_SEXES = ("M", "F", "O", "")


class Status(enum.StrEnum):
    """Where a scheduled procedure stands."""

    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"


DONE = (Status.COMPLETED, Status.DISCONTINUED)


@dataclass(frozen=True)
class NewEntry:
    """What the front desk types for one scheduled procedure.

    `patient_name` is a DICOM person name (PS3.5 6.2, VR PN), family name
    first: ``"DOE^JANE"``. `birth_date` is ``YYYYMMDD`` or empty; `sex` is
    M, F, O or empty. `scheduled` is local time. An empty
    `accession_number` is numbered by :func:`add_entry` from the scheduled
    day: ``20240131-001``, ``20240131-002``...
    """

    patient_id: str
    patient_name: str
    accession_number: str
    scheduled: datetime
    birth_date: str = ""
    sex: str = ""
    issuer: str = ""
    description: str = ""
    station_ae: str = ""
    modality: str = "US"

    def validated(self) -> NewEntry:
        """Return the entry with values trimmed and checked.

        Raises
        ------
        ValueError
            Naming the first field whose value a modality could not take.
        """
        values = {
            "patient_id": _text("patient_id", self.patient_id, 64, required=True),
            "patient_name": _text("patient_name", self.patient_name, 64 * 5 + 4),
            "accession_number": _text("accession_number", self.accession_number, 16),
            "birth_date": _birth_date(self.birth_date),
            "sex": _sex(self.sex),
            "issuer": _text("issuer", self.issuer, 64),
            "description": _text("description", self.description, 64),
            "station_ae": parse_ae_title(self.station_ae) if self.station_ae else "",
            "modality": _text("modality", self.modality, 16, required=True).upper(),
        }
        if not values["patient_name"].strip("^ "):
            raise ValueError("patient_name: a name is required, e.g. DOE^JANE")
        return NewEntry(scheduled=self.scheduled.replace(microsecond=0), **values)


@dataclass(frozen=True)
class WorklistEntry:
    """One scheduled procedure as stored."""

    id: int
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    accession_number: str
    requested_procedure_id: str
    sps_id: str
    scheduled_date: str
    scheduled_time: str
    description: str
    station_ae: str
    modality: str
    study_uid: str
    status: Status
    created_at: str
    created_by: str
    updated_at: str


def add_entry(
    conn: sqlite3.Connection, new: NewEntry, created_by: str = ""
) -> WorklistEntry:
    """Schedule a procedure; its IDs and Study Instance UID are made here.

    Parameters
    ----------
    conn : sqlite3.Connection
        A writable ``app.db`` connection in autocommit mode.
    new : NewEntry
        What was typed; validated here.
    created_by : str
        The user who made it, for the record.

    Raises
    ------
    ValueError
        If a value is invalid or the accession number is already used.
    """
    entry = new.validated()
    now = _now()
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not entry.accession_number:
            entry = replace(
                entry, accession_number=_next_accession(conn, entry.scheduled.date())
            )
        row_id = _insert(conn, entry, created_by, now)
        # PS3.3 C.4.11: the Requested Procedure and Scheduled Procedure Step
        # IDs (VR SH) are made from the row id, which AUTOINCREMENT never
        # hands out twice, so an old MPPS never names a new entry.
        conn.execute(
            "UPDATE worklist SET requested_procedure_id = ?, sps_id = ? WHERE id = ?",
            (f"RP{row_id:06d}", f"SPS{row_id:06d}", row_id),
        )
        conn.execute("COMMIT")
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK")
        raise ValueError(
            f"accession_number: {entry.accession_number!r} is already scheduled"
        ) from None
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    created = get_entry(conn, row_id)
    assert created is not None
    return created


def get_entry(conn: sqlite3.Connection, entry_id: int) -> WorklistEntry | None:
    """Return one entry by its id, or None."""
    row = conn.execute("SELECT * FROM worklist WHERE id = ?", (entry_id,)).fetchone()
    return None if row is None else _entry(row)


def remove_entry(conn: sqlite3.Connection, entry_id: int) -> bool:
    """Delete an entry (one made by mistake); return whether it existed."""
    cursor = conn.execute("DELETE FROM worklist WHERE id = ?", (entry_id,))
    return cursor.rowcount > 0


def list_entries(
    conn: sqlite3.Connection,
    *,
    stale_days: int | None = None,
    include_done: bool = False,
    today: date | None = None,
) -> list[WorklistEntry]:
    """Return entries by scheduled time, oldest first.

    Parameters
    ----------
    conn : sqlite3.Connection
        An ``app.db`` connection.
    stale_days : int, optional
        Leave out entries scheduled more than this many days before `today`;
        None keeps every date.
    include_done : bool
        Keep completed and discontinued entries too.
    today : datetime.date, optional
        The local date to count from; defaults to today.
    """
    oldest = "00000000"
    if stale_days is not None:
        start = (today or date.today()) - timedelta(days=stale_days)
        oldest = start.strftime("%Y%m%d")
    statuses = list(Status) if include_done else [Status.SCHEDULED, Status.IN_PROGRESS]
    marks = ", ".join("?" for _ in statuses)
    rows = conn.execute(
        f"SELECT * FROM worklist WHERE status IN ({marks}) AND scheduled_date >= ?"
        " ORDER BY scheduled_date, scheduled_time, id",
        (*[s.value for s in statuses], oldest),
    ).fetchall()
    return [_entry(row) for row in rows]


def open_entries(
    conn: sqlite3.Connection, stale_days: int, today: date | None = None
) -> list[WorklistEntry]:
    """Return what the Modality Worklist serves: not done, not stale."""
    return list_entries(conn, stale_days=stale_days, today=today)


def entries_for_step(
    conn: sqlite3.Connection, sps_id: str, accession_number: str, study_uid: str
) -> list[int]:
    """Find the entries one item of a performed step's scheduled steps names.

    The Scheduled Procedure Step ID is ours and decides alone; without it,
    the accession number, and failing that the Study Instance UID
    (PS3.4 F.7.2.1, Scheduled Step Attribute Sequence).
    """
    for column, value in (
        ("sps_id", sps_id),
        ("accession_number", accession_number),
        ("study_uid", study_uid),
    ):
        if not value:
            continue
        rows = conn.execute(
            f"SELECT id FROM worklist WHERE {column} = ?", (value,)
        ).fetchall()
        if rows:
            return [int(row["id"]) for row in rows]
    return []


def set_status(
    conn: sqlite3.Connection, entry_ids: Iterable[int], status: Status
) -> None:
    """Move entries to `status`; the caller owns the transaction.

    A completed or discontinued entry stays so: a late or repeated report
    never reopens it.
    """
    done = [s.value for s in DONE]
    for entry_id in entry_ids:
        conn.execute(
            "UPDATE worklist SET status = ?, updated_at = ?"
            " WHERE id = ? AND status NOT IN (?, ?)",
            (status.value, _now(), entry_id, *done),
        )


def _next_accession(conn: sqlite3.Connection, day: date) -> str:
    # A small office has no RIS to number its procedures: the day and the
    # next count after the day's highest, "20240131-001" (VR SH: 16 chars).
    prefix = day.strftime("%Y%m%d") + "-"
    counts = [
        int(row[0][len(prefix) :])
        for row in conn.execute(
            "SELECT accession_number FROM worklist WHERE accession_number LIKE ?",
            (prefix + "%",),
        )
        if row[0][len(prefix) :].isdigit()
    ]
    return f"{prefix}{max(counts, default=0) + 1:03d}"


def _insert(
    conn: sqlite3.Connection, entry: NewEntry, created_by: str, now: str
) -> int:
    cursor = conn.execute(
        "INSERT INTO worklist (patient_id, issuer, patient_name, birth_date, sex,"
        " accession_number, requested_procedure_id, sps_id, scheduled_date,"
        " scheduled_time, description, station_ae, modality, study_uid, status,"
        " created_at, created_by, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, '', '', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            entry.patient_id,
            entry.issuer,
            entry.patient_name,
            entry.birth_date,
            entry.sex,
            entry.accession_number,
            entry.scheduled.strftime("%Y%m%d"),
            entry.scheduled.strftime("%H%M%S"),
            entry.description,
            entry.station_ae,
            entry.modality,
            generate_uid(),
            Status.SCHEDULED.value,
            now,
            created_by,
            now,
        ),
    )
    return int(cursor.lastrowid or 0)


def _entry(row: sqlite3.Row) -> WorklistEntry:
    values = {item.name: row[item.name] for item in fields(WorklistEntry)}
    values["status"] = Status(values["status"])
    return WorklistEntry(**values)


def _text(name: str, value: str, limit: int, *, required: bool = False) -> str:
    text = (value or "").strip()
    if required and not text:
        raise ValueError(f"{name}: a value is required")
    if len(text) > limit:
        raise ValueError(f"{name}: at most {limit} characters, got {len(text)}")
    if _FORBIDDEN.search(text):
        raise ValueError(f"{name}: no backslash or control character allowed")
    return text


def _birth_date(value: str) -> str:
    text = (value or "").strip().replace("-", "")
    if not text:
        return ""
    if not _DATE.match(text):
        raise ValueError(f"birth_date: expected YYYY-MM-DD or YYYYMMDD, got {value!r}")
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise ValueError(f"birth_date: no such date {value!r}") from None
    return text


def _sex(value: str) -> str:
    text = (value or "").strip().upper()
    if text not in _SEXES:
        raise ValueError(f"sex: expected M, F, O or nothing, got {value!r}")
    return text


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
