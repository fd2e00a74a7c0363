"""Schema of ``app.db``: what cannot be derived from the stored files.

Registered modalities, and later users, worklist entries, identity decisions,
settings, the audit log and backup history. This database is small and is
backed up often; unlike ``index.db`` it is never rebuilt or replaced
automatically.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from appliance import db

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
    return conn
