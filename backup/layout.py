"""What the backup engine knows of a data folder and of a backup folder.

The data folder (see ``appliance/storage.py`` and ``appliance/service.py``)::

    DATA_DIR/app.db            state that cannot be derived
    DATA_DIR/index.db          the index, rebuildable from storage/
    DATA_DIR/storage/YYYY/MM/DD/<AE>/<SOP Instance UID>.<sha256>.dcm
    DATA_DIR/appliance.lock    flock held by the process that owns the folder

Stored files are never modified after they appear, and their name carries
the SHA-256 of their content. The names are repeated here, not imported, so
that ``backup/`` runs where the appliance itself no longer starts.

A backup folder holds one folder per snapshot::

    TARGET/.backup.lock                  flock held by the running backup
    TARGET/2024-05-02_023000/            a complete snapshot
        app.db, index.db                 copies made with SQLite's backup API
        storage/...                      the stored files, as in DATA_DIR
        manifest.db                      every file above: size and SHA-256
        COMPLETE                         JSON summary; written last
    TARGET/2024-05-03_023000.partial/    a run in progress or torn: ignored
    TARGET/2024-04-01_023000.deleting/   being removed by retention: ignored
"""

from __future__ import annotations

import re

STORAGE_DIR = "storage"
APP_DB = "app.db"
INDEX_DB = "index.db"
DATABASES = (APP_DB, INDEX_DB)
DATA_LOCK = "appliance.lock"

TARGET_LOCK = ".backup.lock"
COMPLETE = "COMPLETE"
MANIFEST = "manifest.db"
PARTIAL_SUFFIX = ".partial"
DELETING_SUFFIX = ".deleting"
NAME_FORMAT = "%Y-%m-%d_%H%M%S"
FORMAT_VERSION = 1

_STORED_NAME = re.compile(r"^(?:[0-9.]+|invalid-uid)\.(?P<sha>[0-9a-f]{64})\.dcm$")
_SNAPSHOT_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{6}(?:-\d+)?$")


def hash_in_name(file_name: str) -> str | None:
    """Return the SHA-256 a stored file's name carries, or None if it has none."""
    match = _STORED_NAME.match(file_name)
    return match["sha"] if match else None


def is_snapshot_name(folder_name: str) -> bool:
    """Tell whether a folder name is that of a finished snapshot."""
    return _SNAPSHOT_NAME.match(folder_name) is not None
