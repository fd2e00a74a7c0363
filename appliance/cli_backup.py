"""The ``appliance backup`` and ``appliance restore`` commands.

::

    appliance backup run [--verify-all]   back up now into backup_dir
    appliance backup list                 status, warnings and snapshots
    appliance backup verify SNAPSHOT [--quick]
    appliance restore SNAPSHOT [--data-dir DIR]

SNAPSHOT is a snapshot's name in ``backup_dir``, its folder's path, or
``latest``. ``backup run`` works whether or not the service runs: it only
reads the data folder, and the backup folder's lock keeps it from running
beside the nightly backup. ``restore`` needs the service stopped when it
replaces a data folder; the folder replaced is moved aside, never deleted.
The work is done by the :mod:`backup` package, which ``python -m backup``
also drives where the appliance itself no longer starts.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from appliance import db
from appliance.config import Settings
from appliance.errors import ApplianceError
from appliance.progress import Progress, ProgressPrinter
from appliance.state.audit import record_outside_web
from appliance.state.schema import MIGRATIONS, open_state
from backup import cli as backup_cli
from backup.engine import BackupOptions, BackupResult
from backup.errors import BackupError
from backup.layout import APP_DB
from backup.restore import restore_snapshot
from backup.retention import Retention
from backup.runner import run_and_record
from backup.status import BackupSummary, summary
from backup.target import human_bytes

EXIT_FAILED = 1
MB = 1_000_000

Command = Callable[[Settings, argparse.Namespace], int]


def add_backup_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``backup run|list|verify`` and ``restore`` to the ``appliance`` command."""
    backup = commands.add_parser("backup", help="back up to backup_dir")
    actions = backup.add_subparsers(dest="action", required=True)

    run = actions.add_parser("run", help="back up now")
    run.add_argument(
        "--verify-all",
        action="store_true",
        help="read every copied file back from the backup disk (slower)",
    )
    run.set_defaults(run=_guarded(backup_now))

    listing = actions.add_parser("list", help="show the status and the snapshots")
    listing.set_defaults(run=_guarded(list_backups))

    verify = actions.add_parser("verify", help="check a snapshot, changing nothing")
    verify.add_argument("snapshot", help="name in backup_dir, folder, or 'latest'")
    verify.add_argument("--quick", action="store_true", help="sizes, not hashes")
    verify.set_defaults(run=_guarded(verify_backup))

    restore = commands.add_parser("restore", help="restore a backup snapshot")
    restore.add_argument("snapshot", help="name in backup_dir, folder, or 'latest'")
    restore.add_argument(
        "--data-dir", type=Path, help="restore here (default: data_dir)"
    )
    restore.set_defaults(run=_guarded(restore_backup))


def backup_now(settings: Settings, args: argparse.Namespace) -> int:
    """Run one backup in this process and record it; 0 when it completed."""
    if settings.backup_dir is None:
        raise BackupError("backup_dir is not set: backups are off")
    retention = Retention(
        settings.keep_daily, settings.keep_weekly, settings.keep_monthly
    )
    options = BackupOptions(
        settings.data_dir,
        settings.backup_dir,
        retention,
        "command",
        verify_all=args.verify_all,
    )
    result = run_and_record(options)
    if not result.busy:
        outcome = "complete" if result.ok else f"failed: {result.error}"
        _audit(settings.data_dir, "backup", f"{result.snapshot or '-'} {outcome}")
    if not result.ok:
        print(f"appliance: {result.error}", file=sys.stderr)
        return EXIT_FAILED
    print(_describe_run(result))
    return 0


def list_backups(settings: Settings, _args: argparse.Namespace) -> int:
    """Print the backup status, the banner's warnings and every snapshot."""
    status = summary(
        settings.backup_dir,
        settings.data_dir / APP_DB,
        backup_time=settings.backup_time,
        data_dir=settings.data_dir,
    )
    for line in _status_lines(status):
        print(line)
    backup_cli.print_snapshots(status.snapshots)
    return 0


def verify_backup(settings: Settings, args: argparse.Namespace) -> int:
    """Verify one snapshot; 0 when it passes."""
    return backup_cli.verify_command(
        args.snapshot, settings.backup_dir, args.quick, prog="appliance"
    )


def restore_backup(settings: Settings, args: argparse.Namespace) -> int:
    """Restore a snapshot into the data folder (or ``--data-dir``)."""
    data_dir = args.data_dir or settings.data_dir
    printer = ProgressPrinter("MB")
    progress = Progress()

    def show(done: int, total: int) -> None:
        if progress.view().total is None:
            progress.restart(total // MB)
        progress.advance(done // MB - progress.view().done)
        printer.show(progress.view(), "restoring")

    try:
        result = restore_snapshot(
            args.snapshot, data_dir, target=settings.backup_dir, progress=show
        )
    finally:
        printer.close()
    backup_cli.report_restore(result)
    if not _warn_if_newer(data_dir / APP_DB):
        kept = f"; the replaced data is in {result.moved_aside}"
        _audit(
            data_dir, "restore", result.snapshot + (kept if result.moved_aside else "")
        )
    return 0


def _status_lines(status: BackupSummary) -> list[str]:
    if not status.enabled:
        return [f"Warning: {text}" for text in status.warnings]
    lines = [f"Backup folder: {status.target} ({status.target_state})"]
    if status.free_bytes is not None and status.total_bytes is not None:
        lines.append(
            f"Free space: {human_bytes(status.free_bytes)} of "
            f"{human_bytes(status.total_bytes)}"
        )
    if status.last_success is not None and status.last_success_age is not None:
        hours = status.last_success_age.total_seconds() / 3600
        lines.append(
            f"Last complete backup: {status.last_snapshot}, "
            f"{status.last_success:%Y-%m-%d %H:%M} ({hours:.1f} hours ago), "
            f"{human_bytes(status.last_size_bytes or 0)}"
        )
    last = status.last_run
    if last is not None and not last.ok:
        when = f"{last.started_at:%Y-%m-%d %H:%M}"
        lines.append(f"Last attempt failed ({when}): {last.error}")
    if status.running:
        lines.append("A backup is running now.")
    if status.next_run is not None:
        lines.append(f"Next backup: {status.next_run:%Y-%m-%d %H:%M}")
    lines += [f"Warning: {text}" for text in status.warnings]
    lines += [f"Note: {text}" for text in status.notes]
    lines.append(f"Complete snapshots: {len(status.snapshots)}")
    return lines


def _describe_run(result: BackupResult) -> str:
    line = (
        f"Backup {result.snapshot} complete in {result.seconds:.1f} s: "
        f"{result.files:,} files ({result.copied_files:,} copied), "
        f"{human_bytes(result.bytes)} ({human_bytes(result.copied_bytes)} written)"
    )
    if result.removed:
        line += f"; removed {len(result.removed)} old snapshot(s)"
    return "\n".join([line, *(f"Warning: {text}" for text in result.problems)])


def _warn_if_newer(app_db: Path) -> bool:
    # A snapshot from a newer appliance restores fine, but this one will
    # refuse to open it (db.migrate): say so now rather than at start.
    try:
        with closing(db.connect(app_db, readonly=True)) as conn:
            version = db.schema_version(conn)
    except sqlite3.Error:
        return False
    known = MIGRATIONS[-1].version
    if version > known:
        print(
            f"Warning: {app_db} has schema version {version}, newer than this "
            f"appliance knows ({known}); upgrade the appliance before starting it.",
            file=sys.stderr,
        )
    return version > known


def _audit(data_dir: Path, action: str, detail: str) -> None:
    # Commands are audited like the web's actions; a failure to record is
    # said, but does not undo what was done.
    app_db = data_dir / APP_DB
    if not app_db.exists():
        return
    try:
        with closing(open_state(app_db)):
            pass
        record_outside_web(app_db, action, detail[:500])
    except (ApplianceError, sqlite3.Error) as exc:
        print(f"Warning: could not record the {action} in {app_db}: {exc}")


def _guarded(command: Command) -> Command:
    # Backup errors are the owner's to fix: one line, exit status 1.
    def run(settings: Settings, args: argparse.Namespace) -> int:
        try:
            return int(command(settings, args))
        except BackupError as exc:
            print(f"appliance: {exc}", file=sys.stderr)
            return EXIT_FAILED

    return run
