"""Patient records for the identity review: conflicts, records, their studies.

Read-only questions on a reader's connection. A record is named by its row
id only for the length of one page: a rebuild renumbers rows, so every form
that acts on a record also carries its :func:`fingerprint`, and the action
is refused if the record no longer reads that way.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict, dataclass, field

from appliance.index.decisions import row_demographics
from appliance.index.identity import Demographics

STUDIES_PER_RECORD = 20


@dataclass(frozen=True)
class StudyBrief:
    """One study of a record, with what shows how it arrived."""

    study_uid: str
    study_date: str
    study_time: str
    description: str
    accession_number: str
    modalities: str
    image_count: int
    clip_count: int
    owned: bool
    """False when the study is filed under another record and only holds
    instances that name this one."""
    sources: str
    first_received_at: str
    thumbnail: int | None


@dataclass(frozen=True)
class PatientRecord:
    """One patient row, told apart from others sharing its ID."""

    ref: int
    demographics: Demographics
    first_seen_at: str
    first_source_ae: str
    instance_count: int
    studies: list[StudyBrief] = field(default_factory=list)

    @property
    def token(self) -> str:
        """The record's fingerprint, for forms (see :func:`fingerprint`)."""
        return fingerprint(self.demographics)


@dataclass(frozen=True)
class Conflict:
    """Two records a person has to tell apart or join."""

    id: int
    fields: list[str]
    detected_at: str
    source: str
    first: PatientRecord
    second: PatientRecord


def fingerprint(demographics: Demographics) -> str:
    """A short digest of demographics, to see that a record has not changed."""
    text = json.dumps(asdict(demographics), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def open_conflicts(conn: sqlite3.Connection, limit: int = 100) -> list[Conflict]:
    """Return the conflicts not decided yet, oldest first, with both records."""
    rows = conn.execute(
        "SELECT * FROM identity_conflicts ORDER BY detected_at, id LIMIT ?", (limit,)
    ).fetchall()
    return [_conflict(conn, row) for row in rows]


def count_conflicts(conn: sqlite3.Connection) -> int:
    """How many conflicts wait for a person."""
    return int(conn.execute("SELECT count(*) FROM identity_conflicts").fetchone()[0])


def get_conflict(conn: sqlite3.Connection, conflict_id: int) -> Conflict | None:
    """Return one conflict by its row id, or None."""
    row = conn.execute(
        "SELECT * FROM identity_conflicts WHERE id = ?", (conflict_id,)
    ).fetchone()
    return None if row is None else _conflict(conn, row)


def get_patient(
    conn: sqlite3.Connection, ref: int, studies: int = STUDIES_PER_RECORD
) -> PatientRecord | None:
    """Return one record with up to `studies` of its studies, or None."""
    row = conn.execute("SELECT * FROM patients WHERE id = ?", (ref,)).fetchone()
    return None if row is None else _record(conn, row, studies)


def records_with_id(
    conn: sqlite3.Connection, patient_id: str, studies: int = 0
) -> list[PatientRecord]:
    """Return every record carrying exactly this PatientID, oldest first."""
    rows = conn.execute(
        "SELECT * FROM patients WHERE patient_id = ? ORDER BY first_seen_at, id",
        (patient_id,),
    ).fetchall()
    return [_record(conn, row, studies) for row in rows]


def records_with_id_prefix(
    conn: sqlite3.Connection, prefix: str, limit: int = 20
) -> list[PatientRecord]:
    """Return the records whose PatientID starts with `prefix`, by ID."""
    rows = conn.execute(
        "SELECT * FROM patients WHERE patient_id >= ? AND patient_id < ?"
        " ORDER BY patient_id, first_seen_at, id LIMIT ?",
        (prefix, prefix + "\U0010ffff", limit),
    ).fetchall()
    return [_record(conn, row, 0) for row in rows]


def conflicts_of(conn: sqlite3.Connection, ref: int) -> list[tuple[int, int, str]]:
    """Return (conflict id, other record, fields) for each conflict of a record."""
    rows = conn.execute(
        "SELECT id, patient_a, patient_b, fields FROM identity_conflicts"
        " WHERE patient_a = ? OR patient_b = ? ORDER BY id",
        (ref, ref),
    ).fetchall()
    return [
        (
            int(row["id"]),
            int(row["patient_b"] if row["patient_a"] == ref else row["patient_a"]),
            row["fields"],
        )
        for row in rows
    ]


def in_conflict(conn: sqlite3.Connection, refs: set[int]) -> set[int]:
    """Return which of `refs` are part of a conflict."""
    if not refs:
        return set()
    marks = ",".join("?" * len(refs))
    found = conn.execute(
        f"SELECT patient_a, patient_b FROM identity_conflicts"
        f" WHERE patient_a IN ({marks}) OR patient_b IN ({marks})",
        (*refs, *refs),
    ).fetchall()
    return {int(side) for row in found for side in row} & refs


def study_owner(conn: sqlite3.Connection, study_uid: str) -> int | None:
    """Return the record a study is filed under, or None."""
    row = conn.execute(
        "SELECT patient_ref FROM studies WHERE study_uid = ?", (study_uid,)
    ).fetchone()
    return None if row is None else int(row[0])


def _conflict(conn: sqlite3.Connection, row: sqlite3.Row) -> Conflict:
    first = get_patient(conn, int(row["patient_a"]))
    second = get_patient(conn, int(row["patient_b"]))
    assert first is not None and second is not None  # foreign keys
    return Conflict(
        id=int(row["id"]),
        fields=[item for item in row["fields"].split(",") if item],
        detected_at=row["detected_at"],
        source=row["source_ae"],
        first=first,
        second=second,
    )


def _record(conn: sqlite3.Connection, row: sqlite3.Row, studies: int) -> PatientRecord:
    ref = int(row["id"])
    count = conn.execute(
        "SELECT count(*) FROM instances WHERE patient_ref = ?", (ref,)
    ).fetchone()[0]
    return PatientRecord(
        ref=ref,
        demographics=row_demographics(row),
        first_seen_at=row["first_seen_at"],
        first_source_ae=row["first_source_ae"],
        instance_count=int(count),
        studies=_studies(conn, ref, studies) if studies else [],
    )


def _studies(conn: sqlite3.Connection, ref: int, limit: int) -> list[StudyBrief]:
    # The record's own studies, and studies of other records that hold
    # instances naming it (a study-patient or worklist conflict).
    rows = conn.execute(
        "SELECT s.*, s.patient_ref = :ref AS owned,"
        " (SELECT group_concat(DISTINCT i.source_ae) FROM instances i"
        "  JOIN series se ON se.id = i.series_ref WHERE se.study_ref = s.id)"
        "  AS sources,"
        " (SELECT min(i.received_at) FROM instances i"
        "  JOIN series se ON se.id = i.series_ref WHERE se.study_ref = s.id)"
        "  AS first_received_at,"
        " (SELECT i.id FROM instances i JOIN series se ON se.id = i.series_ref"
        "  WHERE se.study_ref = s.id AND i.rows IS NOT NULL"
        "  ORDER BY i.patient_ref != :ref, se.series_number, i.instance_number, i.id"
        "  LIMIT 1) AS thumbnail"
        " FROM studies s WHERE s.patient_ref = :ref OR s.id IN"
        " (SELECT se.study_ref FROM instances i JOIN series se"
        "  ON se.id = i.series_ref WHERE i.patient_ref = :ref)"
        " ORDER BY s.study_date DESC, s.study_time DESC, s.id LIMIT :limit",
        {"ref": ref, "limit": limit},
    ).fetchall()
    return [
        StudyBrief(
            study_uid=row["study_uid"],
            study_date=row["study_date"],
            study_time=row["study_time"],
            description=row["description"],
            accession_number=row["accession_number"],
            modalities=row["modalities"],
            image_count=int(row["image_count"]),
            clip_count=int(row["clip_count"]),
            owned=bool(row["owned"]),
            sources=(row["sources"] or "").replace(",", ", "),
            first_received_at=row["first_received_at"] or "",
            thumbnail=row["thumbnail"],
        )
        for row in rows
    ]


def find_record(conn: sqlite3.Connection, demographics: Demographics) -> int | None:
    """Return the record showing exactly these demographics, or None."""
    row = conn.execute(
        "SELECT id FROM patients WHERE patient_id = ? AND issuer = ?"
        " AND name_key = ? AND birth_date = ? AND sex = ? ORDER BY id LIMIT 1",
        (
            demographics.patient_id,
            demographics.issuer,
            demographics.name_key,
            demographics.birth_date,
            demographics.sex,
        ),
    ).fetchone()
    return None if row is None else int(row[0])
