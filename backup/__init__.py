"""Hot backups of an appliance's data folder, and restore from them.

This package depends on nothing but the standard library, the data folder's
layout and SQLite, so that it can restore a machine on which the appliance
itself no longer starts (``python -m backup restore SNAPSHOT --data-dir
DIR``). See :mod:`backup.layout` for what a snapshot holds.

Modules, in the order a run uses them:

- :mod:`backup.target`: is the backup folder there, writable, roomy?
- :mod:`backup.lock`: one backup at a time per backup folder.
- :mod:`backup.engine`: one run: databases, storage, verify, complete.
- :mod:`backup.databases`, :mod:`backup.storagecopy`, :mod:`backup.files`,
  :mod:`backup.manifest`: its parts.
- :mod:`backup.snapshots`: naming, listing and completing snapshots.
- :mod:`backup.retention`: which snapshots to keep.
- :mod:`backup.verify`, :mod:`backup.restore`: checking and restoring.
- :mod:`backup.history`, :mod:`backup.status`, :mod:`backup.job`: the
  history in ``app.db``, the status for the web, the serving process's job.
"""

from backup.engine import BackupOptions, BackupResult, run_backup
from backup.retention import Retention
from backup.snapshots import Snapshot, find_snapshot, list_snapshots

__all__ = [
    "BackupOptions",
    "BackupResult",
    "Retention",
    "Snapshot",
    "find_snapshot",
    "list_snapshots",
    "run_backup",
]
