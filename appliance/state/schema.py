"""Schema of ``app.db``: what cannot be derived from the stored files.

Registered modalities, users, worklist entries, identity decisions, settings,
the audit log, backup history and the storage commitment reports not yet
delivered. This database is small and is backed up often; unlike
``index.db`` it is never rebuilt or replaced automatically.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from appliance import db
from appliance.state import audit_chain

LABEL = "app.db"

MIGRATIONS = (
    db.Migration(
        1,
        "modalities",
        """
        CREATE TABLE modalities (
            id INTEGER PRIMARY KEY,
            ae_title TEXT NOT NULL UNIQUE,
            host TEXT,
            port INTEGER,
            default_issuer TEXT NOT NULL DEFAULT '',
            description TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL
        );
        """,
    ),
    db.Migration(
        2,
        "users-and-audit",
        """
        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            password_hash TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('admin', 'clinician', 'frontdesk')),
            must_change_password INTEGER NOT NULL DEFAULT 0,
            disabled INTEGER NOT NULL DEFAULT 0,
            session_token TEXT NOT NULL,
            created_at TEXT NOT NULL,
            password_changed_at TEXT NOT NULL,
            last_login_at TEXT
        );

        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            username TEXT NOT NULL,
            action TEXT NOT NULL,
            address TEXT NOT NULL DEFAULT '',
            patient_id TEXT NOT NULL DEFAULT '',
            study_uid TEXT NOT NULL DEFAULT '',
            object_uid TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX audit_by_time ON audit (at);
        CREATE INDEX audit_by_user ON audit (username, at);
        CREATE INDEX audit_by_patient ON audit (patient_id, at);
        """,
    ),
    db.Migration(
        3,
        "integrity-checks",
        """
        CREATE TABLE integrity_checks (
            id INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            trigger TEXT NOT NULL,
            deep INTEGER NOT NULL,
            ok INTEGER NOT NULL,
            counts TEXT NOT NULL,
            problems TEXT NOT NULL DEFAULT '',
            error TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX integrity_checks_by_time ON integrity_checks (started_at);
        """,
    ),
    db.Migration(
        4,
        "worklist-and-performed-steps",
        """
        CREATE TABLE worklist (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            patient_id TEXT NOT NULL,
            issuer TEXT NOT NULL DEFAULT '',
            patient_name TEXT NOT NULL,
            birth_date TEXT NOT NULL DEFAULT '',
            sex TEXT NOT NULL DEFAULT '',
            accession_number TEXT NOT NULL UNIQUE,
            requested_procedure_id TEXT NOT NULL,
            sps_id TEXT NOT NULL,
            scheduled_date TEXT NOT NULL,
            scheduled_time TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            station_ae TEXT NOT NULL DEFAULT '',
            modality TEXT NOT NULL DEFAULT 'US',
            study_uid TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL DEFAULT 'SCHEDULED' CHECK (status IN
                ('SCHEDULED', 'IN PROGRESS', 'COMPLETED', 'DISCONTINUED')),
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL DEFAULT '',
            updated_at TEXT NOT NULL
        );
        CREATE INDEX worklist_by_schedule
            ON worklist (status, scheduled_date, scheduled_time);
        CREATE INDEX worklist_by_sps_id ON worklist (sps_id);

        CREATE TABLE performed_steps (
            id INTEGER PRIMARY KEY,
            sop_instance_uid TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL CHECK (status IN
                ('IN PROGRESS', 'COMPLETED', 'DISCONTINUED')),
            calling_ae TEXT NOT NULL,
            attributes TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE performed_step_links (
            step_ref INTEGER NOT NULL
                REFERENCES performed_steps (id) ON DELETE CASCADE,
            worklist_ref INTEGER NOT NULL REFERENCES worklist (id) ON DELETE CASCADE,
            PRIMARY KEY (step_ref, worklist_ref)
        );
        CREATE INDEX performed_step_links_by_entry
            ON performed_step_links (worklist_ref);
        """,
    ),
    db.Migration(
        5,
        "backup-history",
        """
        CREATE TABLE backup_runs (
            id INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            trigger TEXT NOT NULL,
            target TEXT NOT NULL,
            snapshot TEXT NOT NULL DEFAULT '',
            ok INTEGER NOT NULL,
            files INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0,
            copied_files INTEGER NOT NULL DEFAULT 0,
            copied_bytes INTEGER NOT NULL DEFAULT 0,
            seconds REAL NOT NULL DEFAULT 0,
            error TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX backup_runs_by_time ON backup_runs (started_at);
        """,
    ),
    db.Migration(
        6,
        "identity-decisions",
        """
        CREATE TABLE identity_decisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('different-people', 'same-person',
                'move-study', 'new-patient', 'correct', 'undo')),
            records TEXT NOT NULL DEFAULT '[]',
            result TEXT NOT NULL DEFAULT '',
            study_uid TEXT NOT NULL DEFAULT '',
            undoes INTEGER REFERENCES identity_decisions (id),
            undone_by INTEGER REFERENCES identity_decisions (id),
            note TEXT NOT NULL DEFAULT '',
            made_by TEXT NOT NULL,
            made_at TEXT NOT NULL
        );
        CREATE TABLE identity_decision_patients (
            patient_id TEXT NOT NULL,
            decision_ref INTEGER NOT NULL REFERENCES identity_decisions (id),
            PRIMARY KEY (patient_id, decision_ref)
        ) WITHOUT ROWID;
        """,
    ),
    db.Migration(
        7,
        "sessions-lockout-directory-users-audit-chain",
        """
        ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'local'
            CHECK (source IN ('local', 'directory'));
        ALTER TABLE users ADD COLUMN directory_dn TEXT NOT NULL DEFAULT '';

        CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            user_ref INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            last_seen_at REAL NOT NULL,
            address TEXT NOT NULL DEFAULT '',
            user_agent TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX sessions_by_user ON sessions (user_ref);

        CREATE TABLE login_failures (
            key TEXT PRIMARY KEY,
            failures INTEGER NOT NULL,
            last_failure_at REAL NOT NULL,
            locked_until REAL NOT NULL DEFAULT 0
        );

        ALTER TABLE audit ADD COLUMN prev_hash TEXT;
        ALTER TABLE audit ADD COLUMN row_hash TEXT;
        CREATE TABLE audit_head (
            one INTEGER PRIMARY KEY CHECK (one = 1),
            last_id INTEGER NOT NULL,
            last_hash TEXT NOT NULL
        );
        INSERT INTO audit_head (one, last_id, last_hash)
            VALUES (1, 0, printf('%064d', 0));

        CREATE TRIGGER audit_insert_sealed BEFORE INSERT ON audit
        WHEN NEW.prev_hash IS NULL OR NEW.row_hash IS NULL
        BEGIN
            SELECT RAISE(ABORT, 'audit rows are added by appliance.state.audit');
        END;
        CREATE TRIGGER audit_insert_head AFTER INSERT ON audit
        BEGIN
            UPDATE audit_head SET last_id = NEW.id, last_hash = NEW.row_hash;
        END;
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        WHEN OLD.row_hash IS NOT NULL OR NEW.row_hash IS NULL
            OR NEW.id IS NOT OLD.id OR NEW.at IS NOT OLD.at
            OR NEW.username IS NOT OLD.username OR NEW.action IS NOT OLD.action
            OR NEW.address IS NOT OLD.address
            OR NEW.patient_id IS NOT OLD.patient_id
            OR NEW.study_uid IS NOT OLD.study_uid
            OR NEW.object_uid IS NOT OLD.object_uid
            OR NEW.detail IS NOT OLD.detail
        BEGIN
            SELECT RAISE(ABORT, 'the audit log is append-only');
        END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN
            SELECT RAISE(ABORT, 'the audit log is append-only');
        END;
        CREATE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head
        WHEN NEW.last_id < OLD.last_id
        BEGIN
            SELECT RAISE(ABORT, 'the audit log is append-only');
        END;
        CREATE TRIGGER audit_head_kept BEFORE DELETE ON audit_head
        BEGIN
            SELECT RAISE(ABORT, 'the audit log is append-only');
        END;
        """,
    ),
    db.Migration(
        8,
        "commitment-reports",
        """
        CREATE TABLE commitment_reports (
            transaction_uid TEXT PRIMARY KEY,
            requestor_ae TEXT NOT NULL,
            requestor_address TEXT NOT NULL,
            instance_refs TEXT NOT NULL,
            asked_at TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL
        );
        """,
    ),
)


def open_state(path: Path) -> sqlite3.Connection:
    """Open ``app.db`` for writing, creating or migrating it.

    Raises
    ------
    appliance.errors.SchemaTooNewError
        If a newer appliance wrote it.
    """
    conn = db.connect(path)
    db.migrate(conn, MIGRATIONS, LABEL)
    audit_chain.seal_unsealed(conn)
    return conn
