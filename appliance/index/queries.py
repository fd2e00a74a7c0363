"""Read-only questions to the index, on a reader's own connection."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class IndexCounts:
    """How much the index holds."""

    patients: int
    studies: int
    series: int
    instances: int
    conflicts: int


def counts(conn: sqlite3.Connection) -> IndexCounts:
    """Count the rows of each level of the index."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM patients) AS patients,"
        " (SELECT count(*) FROM studies) AS studies,"
        " (SELECT count(*) FROM series) AS series,"
        " (SELECT count(*) FROM instances) AS instances,"
        " (SELECT count(*) FROM identity_conflicts) AS conflicts"
    ).fetchone()
    return IndexCounts(**dict(row))


def instances_with_uid(conn: sqlite3.Connection, sop_uid: str) -> list[sqlite3.Row]:
    """Return every stored copy of one SOP Instance UID, oldest first."""
    return conn.execute(
        "SELECT * FROM instances WHERE sop_uid = ? ORDER BY id", (sop_uid,)
    ).fetchall()


def patients_with_id(conn: sqlite3.Connection, patient_id: str) -> list[sqlite3.Row]:
    """Return every patient record carrying a PatientID, each told apart."""
    return conn.execute(
        "SELECT * FROM patients WHERE patient_id = ? ORDER BY id", (patient_id,)
    ).fetchall()


def conflicts(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Return every identity conflict with both patients' demographics."""
    return conn.execute(
        "SELECT c.*, a.patient_id AS a_patient_id, b.patient_id AS b_patient_id"
        " FROM identity_conflicts c"
        " JOIN patients a ON a.id = c.patient_a"
        " JOIN patients b ON b.id = c.patient_b ORDER BY c.id"
    ).fetchall()
