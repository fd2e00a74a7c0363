"""Schema of ``index.db``: only what can be derived from the stored files.

Nothing in this database is precious. It can be deleted and rebuilt from
``storage/`` at any time; decisions people make (merges, "different people")
live in ``app.db`` and are applied on top.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from appliance import db

LABEL = "index.db"

MIGRATIONS = (
    db.Migration(
        1,
        "initial",
        """
        CREATE TABLE patients (
            id INTEGER PRIMARY KEY,
            patient_id TEXT NOT NULL,
            issuer TEXT NOT NULL,
            name TEXT NOT NULL,
            name_key TEXT NOT NULL,
            birth_date TEXT NOT NULL,
            sex TEXT NOT NULL,
            first_seen_at TEXT NOT NULL,
            first_source_ae TEXT NOT NULL
        );
        CREATE INDEX patients_by_patient_id ON patients (patient_id);
        CREATE INDEX patients_by_name_key ON patients (name_key);

        CREATE TABLE studies (
            id INTEGER PRIMARY KEY,
            study_uid TEXT NOT NULL UNIQUE,
            patient_ref INTEGER NOT NULL REFERENCES patients (id),
            study_date TEXT NOT NULL,
            study_time TEXT NOT NULL,
            accession_number TEXT NOT NULL,
            description TEXT NOT NULL,
            referring_physician TEXT NOT NULL,
            modalities TEXT NOT NULL DEFAULT '',
            image_count INTEGER NOT NULL DEFAULT 0,
            clip_count INTEGER NOT NULL DEFAULT 0,
            last_received_at TEXT NOT NULL
        );
        CREATE INDEX studies_by_date ON studies (study_date DESC, study_time DESC);
        CREATE INDEX studies_by_patient ON studies (patient_ref);
        CREATE INDEX studies_by_accession ON studies (accession_number);

        CREATE TABLE series (
            id INTEGER PRIMARY KEY,
            series_uid TEXT NOT NULL UNIQUE,
            study_ref INTEGER NOT NULL REFERENCES studies (id),
            modality TEXT NOT NULL,
            series_number INTEGER,
            description TEXT NOT NULL
        );
        CREATE INDEX series_by_study ON series (study_ref);

        CREATE TABLE instances (
            id INTEGER PRIMARY KEY,
            sop_uid TEXT NOT NULL,
            series_ref INTEGER NOT NULL REFERENCES series (id),
            patient_ref INTEGER NOT NULL REFERENCES patients (id),
            sop_class_uid TEXT NOT NULL,
            transfer_syntax_uid TEXT NOT NULL,
            instance_number INTEGER,
            number_of_frames INTEGER NOT NULL,
            rows INTEGER,
            columns INTEGER,
            photometric TEXT NOT NULL,
            file_path TEXT NOT NULL UNIQUE,
            file_size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            received_at TEXT NOT NULL,
            source_ae TEXT NOT NULL,
            has_differing_copy INTEGER NOT NULL DEFAULT 0,
            UNIQUE (sop_uid, sha256)
        );
        CREATE INDEX instances_by_series ON instances (series_ref);
        CREATE INDEX instances_by_patient ON instances (patient_ref);

        CREATE TABLE identity_conflicts (
            id INTEGER PRIMARY KEY,
            patient_a INTEGER NOT NULL REFERENCES patients (id),
            patient_b INTEGER NOT NULL REFERENCES patients (id),
            fields TEXT NOT NULL,
            detected_at TEXT NOT NULL,
            source_ae TEXT NOT NULL,
            UNIQUE (patient_a, patient_b)
        );
        """,
    ),
    db.Migration(
        2,
        "conflicts_by_second_patient",
        """
        CREATE INDEX identity_conflicts_by_patient_b
            ON identity_conflicts (patient_b);
        """,
    ),
)


def open_index(path: Path) -> sqlite3.Connection:
    """Open ``index.db`` for writing, creating or migrating it.

    Raises
    ------
    appliance.errors.SchemaTooNewError
        If a newer appliance wrote it.
    """
    conn = db.connect(path)
    db.migrate(conn, MIGRATIONS, LABEL)

    # The index is derived: every row comes from a stored file that was
    # fsynced before the row was written. So a commit need not wait for its
    # own fsync (synchronous=NORMAL keeps the database consistent, and loses
    # at most the last commits on a power cut); reconcile on start re-indexes
    # any stored file whose row was lost. app.db keeps synchronous=FULL.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def open_index_reader(path: Path) -> sqlite3.Connection:
    """Open ``index.db`` read-only, for queries that must never block the writer."""
    return db.connect(path, readonly=True)
