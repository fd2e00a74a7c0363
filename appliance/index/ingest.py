"""Adding one instance to the index, inside the caller's transaction.

Used by the live writer and by a rebuild alike, so both put the same instance
under the same patient, study and series.

Where an instance goes also depends on :class:`IdentityRules`: its sender's
default issuer, the worklist entry of its accession number (whose patient
takes the study; a mismatch is a conflict from ``"worklist"``) and people's
decisions (an instance of a merged or corrected record lands in that record,
one of a moved study in the study's new patient, and records decided to be
different people raise no conflict).
"""

from __future__ import annotations

import enum
import sqlite3
from dataclasses import dataclass

from appliance.index.identity import Demographics, disagreements
from appliance.index.identity_rules import (
    NO_RULES,
    WORKLIST_SOURCE,
    IdentityRules,
    same_demographics,
)
from appliance.index.records import InstanceRecord


class Outcome(enum.Enum):
    """What adding an instance did."""

    ADDED = "added"
    """New SOP Instance UID, or first time this content was seen."""

    ADDED_DIFFERING_COPY = "added-differing-copy"
    """Same SOP Instance UID as a stored instance, different content: both kept."""

    IDENTICAL = "identical"
    """Already stored with the same content; nothing was added."""


@dataclass(frozen=True)
class AddResult:
    """The outcome, and for IDENTICAL the path of the copy already indexed."""

    outcome: Outcome
    instance_row: int
    existing_path: str | None = None


def add_instance(
    conn: sqlite3.Connection,
    record: InstanceRecord,
    identity: IdentityRules | None = None,
) -> AddResult:
    """Index one stored instance; the caller owns the transaction.

    Parameters
    ----------
    conn : sqlite3.Connection
        A writable index connection inside ``BEGIN IMMEDIATE``.
    record : InstanceRecord
        Read from the stored file's header.
    identity : IdentityRules, optional
        Default issuers, worklist and decisions; None files the instance
        exactly as its header says.

    Returns
    -------
    AddResult
    """
    same_uid = conn.execute(
        "SELECT id, sha256, file_path FROM instances WHERE sop_uid = ?",
        (record.sop_instance_uid,),
    ).fetchall()
    for row in same_uid:
        if row["sha256"] == record.sha256:
            return AddResult(Outcome.IDENTICAL, row["id"], row["file_path"])

    rules = identity or NO_RULES
    patient, study_patient = _place(conn, record, rules)
    study = _upsert_study(conn, record, study_patient, rules)
    series = _upsert_series(conn, record, study)
    instance_row = _insert_instance(conn, record, series, patient, bool(same_uid))
    _count_in_study(conn, study, record)

    if same_uid:
        conn.execute(
            "UPDATE instances SET has_differing_copy = 1 WHERE sop_uid = ?",
            (record.sop_instance_uid,),
        )
        return AddResult(Outcome.ADDED_DIFFERING_COPY, instance_row)
    return AddResult(Outcome.ADDED, instance_row)


def _place(
    conn: sqlite3.Connection, record: InstanceRecord, rules: IdentityRules
) -> tuple[int, int]:
    """Return the patient rows of the instance and of its study."""
    # A study a person moved goes, whole, to the patient they chose.
    moved_to = rules.study_target(record.study_instance_uid)
    if moved_to is not None:
        patient = _resolve_patient(conn, record, moved_to, rules)
        return patient, patient

    own = rules.redirect(rules.as_sent(record))
    scheduled = rules.scheduled(record)
    if scheduled is None:
        patient = _resolve_patient(conn, record, own, rules)
        return patient, patient

    # The worklist entry of the accession number is the reference: its
    # patient takes the study. Images that name someone else keep their own
    # record, and the two become a conflict.
    reference = rules.redirect(scheduled)
    if own.patient_id == reference.patient_id and not disagreements(reference, own):
        patient = _resolve_patient(conn, record, _completed(reference, own), rules)
        return patient, patient
    study_patient = _resolve_patient(
        conn, record, reference, rules, source=WORKLIST_SOURCE
    )
    patient = _resolve_patient(conn, record, own, rules, scheduled=study_patient)
    if patient != study_patient:
        _record_linked_conflict(
            conn, study_patient, patient, record, rules, WORKLIST_SOURCE
        )
    return patient, study_patient


def _completed(reference: Demographics, own: Demographics) -> Demographics:
    return Demographics(
        patient_id=reference.patient_id,
        issuer=reference.issuer,
        name=reference.name,
        birth_date=reference.birth_date or own.birth_date,
        sex=reference.sex or own.sex,
    )


def _row_demographics(row: sqlite3.Row) -> Demographics:
    return Demographics(
        patient_id=row["patient_id"],
        issuer=row["issuer"],
        name=row["name"],
        birth_date=row["birth_date"],
        sex=row["sex"],
    )


def _resolve_patient(
    conn: sqlite3.Connection,
    record: InstanceRecord,
    incoming: Demographics,
    rules: IdentityRules,
    source: str | None = None,
    scheduled: int | None = None,
) -> int:
    """Find the patient record `incoming` names, or make a new one.

    A new record that shares its ID with records it disagrees with is
    recorded as a conflict against each of them, unless a person decided
    they are different people. `source` is where the record comes from when
    not the sender; the conflict with the `scheduled` record (the worklist
    patient) is raised by the worklist.
    """
    candidates = conn.execute(
        "SELECT * FROM patients WHERE patient_id = ? ORDER BY id",
        (incoming.patient_id,),
    ).fetchall()

    # A record showing exactly these details takes the instance; else the
    # first that agrees on everything, and a value it lacked (birth date,
    # sex) is filled in from the instance.
    for row in candidates:
        if same_demographics(_row_demographics(row), incoming):
            return int(row["id"])
    for row in candidates:
        if not disagreements(_row_demographics(row), incoming):
            _fill_missing(conn, row, incoming)
            return int(row["id"])

    new_id = _insert_patient(conn, record, incoming, source)
    for row in candidates:
        known = _row_demographics(row)
        if rules.distinct(known, incoming):
            continue
        differing = disagreements(known, incoming)
        raised_by = WORKLIST_SOURCE if row["id"] == scheduled else source
        _record_conflict(conn, int(row["id"]), new_id, differing, record, raised_by)
    return new_id


def _fill_missing(
    conn: sqlite3.Connection, row: sqlite3.Row, incoming: Demographics
) -> None:
    if (row["birth_date"] or not incoming.birth_date) and (
        row["sex"] or not incoming.sex
    ):
        return
    conn.execute(
        "UPDATE patients SET birth_date = ?, sex = ? WHERE id = ?",
        (
            row["birth_date"] or incoming.birth_date,
            row["sex"] or incoming.sex,
            row["id"],
        ),
    )


def _insert_patient(
    conn: sqlite3.Connection,
    record: InstanceRecord,
    incoming: Demographics,
    source: str | None = None,
) -> int:
    cursor = conn.execute(
        "INSERT INTO patients (patient_id, issuer, name, name_key, birth_date,"
        " sex, first_seen_at, first_source_ae) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            incoming.patient_id,
            incoming.issuer,
            incoming.name,
            incoming.name_key,
            incoming.birth_date,
            incoming.sex,
            record.received_at,
            source or record.source_ae,
        ),
    )
    return int(cursor.lastrowid or 0)


def _record_conflict(
    conn: sqlite3.Connection,
    known: int,
    new: int,
    differing: list[str],
    record: InstanceRecord,
    source: str | None = None,
) -> None:
    low, high = sorted((known, new))
    conn.execute(
        "INSERT OR IGNORE INTO identity_conflicts"
        " (patient_a, patient_b, fields, detected_at, source_ae)"
        " VALUES (?, ?, ?, ?, ?)",
        (
            low,
            high,
            ",".join(differing),
            record.received_at,
            source or record.source_ae,
        ),
    )


def _upsert_study(
    conn: sqlite3.Connection,
    record: InstanceRecord,
    patient: int,
    rules: IdentityRules = NO_RULES,
) -> int:
    row = conn.execute(
        "SELECT id, patient_ref FROM studies WHERE study_uid = ?",
        (record.study_instance_uid,),
    ).fetchone()
    if row is None:
        cursor = conn.execute(
            "INSERT INTO studies (study_uid, patient_ref, study_date, study_time,"
            " accession_number, description, referring_physician,"
            " last_received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.study_instance_uid,
                patient,
                record.study_date,
                record.study_time,
                record.accession_number,
                record.study_description,
                record.referring_physician,
                record.received_at,
            ),
        )
        return int(cursor.lastrowid or 0)

    # A study UID is unique world-wide, so a later instance that names another
    # patient stays in the study, and the two patients become a conflict.
    # A study a person moved stays where they put it.
    moved = rules.study_target(record.study_instance_uid) is not None
    if row["patient_ref"] != patient and not moved:
        _record_linked_conflict(conn, int(row["patient_ref"]), patient, record, rules)
    return int(row["id"])


def _record_linked_conflict(
    conn: sqlite3.Connection,
    study_patient: int,
    patient: int,
    record: InstanceRecord,
    rules: IdentityRules = NO_RULES,
    source: str | None = None,
) -> None:
    """Record a conflict between two records one study links, unless decided."""
    rows = conn.execute(
        "SELECT * FROM patients WHERE id IN (?, ?)", (study_patient, patient)
    ).fetchall()
    by_id = {int(row["id"]): _row_demographics(row) for row in rows}
    if rules.distinct(by_id[study_patient], by_id[patient]):
        return
    differing = disagreements(by_id[study_patient], by_id[patient])
    if by_id[study_patient].patient_id != by_id[patient].patient_id:
        differing.insert(0, "patient_id")
    _record_conflict(conn, study_patient, patient, differing, record, source)


def _upsert_series(conn: sqlite3.Connection, record: InstanceRecord, study: int) -> int:
    row = conn.execute(
        "SELECT id FROM series WHERE series_uid = ?", (record.series_instance_uid,)
    ).fetchone()
    if row is not None:
        return int(row["id"])
    cursor = conn.execute(
        "INSERT INTO series (series_uid, study_ref, modality, series_number,"
        " description) VALUES (?, ?, ?, ?, ?)",
        (
            record.series_instance_uid,
            study,
            record.modality,
            record.series_number,
            record.series_description,
        ),
    )
    return int(cursor.lastrowid or 0)


def _insert_instance(
    conn: sqlite3.Connection,
    record: InstanceRecord,
    series: int,
    patient: int,
    has_differing_copy: bool,
) -> int:
    cursor = conn.execute(
        "INSERT INTO instances (sop_uid, series_ref, patient_ref, sop_class_uid,"
        " transfer_syntax_uid, instance_number, number_of_frames, rows, columns,"
        " photometric, file_path, file_size, sha256, received_at, source_ae,"
        " has_differing_copy)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            record.sop_instance_uid,
            series,
            patient,
            record.sop_class_uid,
            record.transfer_syntax_uid,
            record.instance_number,
            record.number_of_frames,
            record.rows,
            record.columns,
            record.photometric_interpretation,
            record.file_path,
            record.file_size,
            record.sha256,
            record.received_at,
            record.source_ae,
            int(has_differing_copy),
        ),
    )
    return int(cursor.lastrowid or 0)


def _count_in_study(
    conn: sqlite3.Connection, study: int, record: InstanceRecord
) -> None:
    # Images and clips are what has pixels (Rows); a structured report or
    # other non-image object is neither.
    has_pixels = record.rows is not None
    is_clip = has_pixels and record.number_of_frames > 1
    is_image = has_pixels and not is_clip
    row = conn.execute(
        "SELECT modalities FROM studies WHERE id = ?", (study,)
    ).fetchone()
    modalities = [m for m in row["modalities"].split("\\") if m]
    if record.modality and record.modality not in modalities:
        modalities.append(record.modality)
    conn.execute(
        "UPDATE studies SET image_count = image_count + ?,"
        " clip_count = clip_count + ?, modalities = ?,"
        " last_received_at = max(last_received_at, ?) WHERE id = ?",
        (
            int(is_image),
            int(is_clip),
            "\\".join(sorted(modalities)),
            record.received_at,
            study,
        ),
    )
