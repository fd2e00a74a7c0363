"""One backup run: a new snapshot of a data folder, verified, then complete.

The order matters for consistency while the appliance keeps receiving:

1. Both databases are copied first (SQLite's online backup API). The
   appliance makes a file durable before it writes its index row, so every
   row in the copied index names a file that already exists.
2. ``storage/`` is copied next: files already in the previous complete
   snapshot are hardlinked, the rest copied and fsynced. Files that arrive
   after the database copy are in the snapshot without an index row; the
   appliance's reconcile at start adds them after a restore.
3. The snapshot is verified: ``PRAGMA integrity_check`` of both database
   copies (while ``storage/`` is copied); every copied file was hashed from
   the bytes copied and checked against the hash in its name; a sample of
   the copies and of the hardlinked files (all copies with ``verify_all``)
   is hashed again from the backup disk. ``appliance backup verify`` hashes
   everything.
4. Only then is it marked complete and renamed from ``.partial``; then
   retention removes snapshots no longer kept.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from backup import layout
from backup.databases import copy_database, count_rows, integrity_problem
from backup.errors import BackupBusyError, BackupError, SnapshotDamagedError
from backup.files import hash_file, make_folder, remove_tree
from backup.lock import TargetLock
from backup.manifest import Entry, Manifest, ManifestWriter
from backup.readback import LinkCheck
from backup.retention import Retention, prune
from backup.snapshots import (
    Snapshot,
    complete,
    discard_leftovers,
    list_snapshots,
    new_name,
)
from backup.storagecopy import StorageCopier, scan, with_margin
from backup.target import check_room, check_target, human_bytes, space

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackupOptions:
    """What to back up, where, and what to keep.

    Parameters
    ----------
    data_dir : pathlib.Path
        The appliance's data folder.
    target : pathlib.Path
        The backup folder (USB disk, NAS share); it must exist.
    retention : Retention
        How many snapshots to keep.
    trigger : str
        Who asked: ``schedule``, ``command`` or ``web``; recorded.
    cancel : threading.Event, optional
        Set to stop the run early; the snapshot is then dropped.
    verify_all : bool
        Read every copied file back from the backup disk, not a sample.
    """

    data_dir: Path
    target: Path
    retention: Retention = field(default_factory=Retention)
    trigger: str = "command"
    cancel: threading.Event | None = None
    verify_all: bool = False


@dataclass(frozen=True)
class BackupResult:
    """How a run went; ``ok`` False carries a one-line ``error``.

    ``busy`` is True when the run did not start because another backup into
    the same folder was running. ``files`` counts stored files; ``bytes``
    is the size of everything in the snapshot, databases included.
    """

    ok: bool
    trigger: str
    target: str
    started_at: datetime
    finished_at: datetime
    seconds: float
    snapshot: str = ""
    files: int = 0
    bytes: int = 0
    copied_files: int = 0
    copied_bytes: int = 0
    linked_files: int = 0
    removed: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    error: str = ""
    busy: bool = False


def run_backup(options: BackupOptions, now: datetime | None = None) -> BackupResult:
    """Make one snapshot of `options.data_dir` in `options.target`.

    Parameters
    ----------
    options : BackupOptions
        What, where and what to keep.
    now : datetime, optional
        The start time (timezone-aware); tests pass simulated dates.

    Returns
    -------
    BackupResult
        Never raises for a failed backup (missing, read-only or full target,
        a busy lock, a damaged copy): ``ok`` is False and ``error`` says why.
    """
    started = now or datetime.now().astimezone()
    clock = time.monotonic()
    logger.info("Backup started into %s (%s)", options.target, options.trigger)
    try:
        check_target(options.target, options.data_dir)
        with TargetLock(options.target):
            result = _Run(options, started, clock).execute()
    except (BackupError, OSError, sqlite3.Error, ValueError) as exc:
        seconds = time.monotonic() - clock
        level = logging.WARNING if isinstance(exc, BackupBusyError) else logging.ERROR
        logger.log(level, "Backup failed after %.1f s: %s", seconds, exc)
        return BackupResult(
            ok=False,
            trigger=options.trigger,
            target=str(options.target),
            started_at=started,
            finished_at=started + timedelta(seconds=seconds),
            seconds=seconds,
            error=str(exc),
            busy=isinstance(exc, BackupBusyError),
        )
    _log_success(result)
    return result


class _Run:
    """The steps of one run, sharing the new snapshot's state."""

    def __init__(self, options: BackupOptions, started: datetime, clock: float) -> None:
        self.options = options
        self.started = started
        self.clock = clock
        self.problems: list[str] = []

    def execute(self) -> BackupResult:
        target = self.options.target
        for leftover in discard_leftovers(target):
            logger.info("Removed %s, left by an interrupted backup", leftover)
        previous = _newest(target)
        name = new_name(target, self.started)
        partial = target / f"{name}{layout.PARTIAL_SUFFIX}"
        make_folder(partial)
        try:
            info = self._fill(partial, previous)
            final = complete(partial, info)
        except BaseException:
            _discard(partial)
            raise
        removed = self._prune(final.name)
        return self._result(final.name, info, removed)

    def _fill(self, partial: Path, previous: Snapshot | None) -> dict[str, Any]:
        manifest = ManifestWriter(partial / layout.MANIFEST)
        try:
            # Databases first: then every copied index row has its file.
            # Their copies are checked on a thread while storage is copied.
            self._copy_databases(partial, manifest)
            with ThreadPoolExecutor(1, thread_name_prefix="backup-db") as pool:
                checked = pool.submit(_check_databases, partial)
                copier = self._copy_storage(partial, previous, manifest)
                counts = checked.result()
            manifest.close()
        except BaseException:
            manifest.abandon()
            raise
        return self._describe(partial, manifest, copier, previous, counts)

    def _copy_databases(self, partial: Path, manifest: ManifestWriter) -> None:
        for name in layout.DATABASES:
            source = self.options.data_dir / name
            if not source.exists() and name == layout.INDEX_DB:
                self._problem("index.db is missing: the snapshot has none")
                continue
            if not source.exists():
                raise BackupError(f"{source} does not exist: is this the data folder?")
            copy_database(source, partial / name)
            copied = partial / name
            sha256 = hash_file(copied, from_disk=True)
            manifest.add(Entry(name, copied.stat().st_size, sha256))

    def _copy_storage(
        self, partial: Path, previous: Snapshot | None, manifest: ManifestWriter
    ) -> StorageCopier:
        # Room at least for the manifest and folders; the new files' share
        # is checked as they are found.
        target = self.options.target
        free = space(target).free
        check_room(target, with_margin(0), free)

        base = _open_manifest(previous)
        copier = StorageCopier(
            self.options.data_dir,
            partial,
            previous.path if previous is not None and base is not None else None,
            manifest,
            self.options.cancel,
            self.options.verify_all,
            lambda needed: check_room(target, needed, free),
        )
        try:
            damaged = _copy_and_check(copier, self.options.data_dir, base)
        finally:
            if base is not None:
                base.close()
        for path in copier.stats.damaged_sources:
            self._problem(f"stored file {path} does not match its name's hash")
        for entry in damaged:
            if copier.holds_link(entry):
                self._replace_damaged_link(copier, entry)
        return copier

    def _replace_damaged_link(self, copier: StorageCopier, entry: Entry) -> None:
        # The damaged inode is shared with older snapshots; this one gets a
        # fresh copy, and the owner hears that the disk is suspect.
        fresh = copier.copy_again(entry)
        if fresh is None or fresh.sha256 != entry.sha256:
            raise SnapshotDamagedError(
                f"{entry.path} is damaged in the previous snapshot and cannot be "
                "copied afresh from the data folder"
            )
        copier.manifest.replace(fresh)
        self._problem(
            f"{entry.path} was damaged in earlier snapshots; copied afresh (the "
            "backup disk may be failing)"
        )

    def _describe(
        self,
        partial: Path,
        manifest: ManifestWriter,
        copier: StorageCopier,
        previous: Snapshot | None,
        counts: dict[str, int | None],
    ) -> dict[str, Any]:
        stats = copier.stats
        finished = self.started + timedelta(seconds=time.monotonic() - self.clock)
        return {
            "started_at": self.started.isoformat(),
            "finished_at": finished.isoformat(),
            "files": stats.linked_files + stats.copied_files,
            "bytes": manifest.bytes,
            "copied_files": stats.copied_files,
            "copied_bytes": stats.copied_bytes,
            **counts,
            "manifest_sha256": hash_file(partial / layout.MANIFEST),
            "previous": previous.name if previous else None,
            "source": str(self.options.data_dir.resolve()),
        }

    def _prune(self, new: str) -> tuple[str, ...]:
        try:
            return tuple(
                prune(
                    self.options.target,
                    self.options.retention,
                    self.started,
                    protect=new,
                )
            )
        except OSError as exc:
            self._problem(f"retention could not remove old snapshots: {exc}")
            return ()

    def _result(
        self, name: str, info: dict[str, Any], removed: tuple[str, ...]
    ) -> BackupResult:
        seconds = time.monotonic() - self.clock
        return BackupResult(
            ok=True,
            trigger=self.options.trigger,
            target=str(self.options.target),
            started_at=self.started,
            finished_at=self.started + timedelta(seconds=seconds),
            seconds=seconds,
            snapshot=name,
            files=info["files"],
            bytes=info["bytes"],
            copied_files=info["copied_files"],
            copied_bytes=info["copied_bytes"],
            linked_files=info["files"] - info["copied_files"],
            removed=removed,
            problems=tuple(self.problems),
        )

    def _problem(self, text: str) -> None:
        logger.warning("Backup: %s", text)
        self.problems.append(text)


def _discard(partial: Path) -> None:
    # The run failed: its unfinished snapshot goes, or the next run removes it.
    try:
        remove_tree(partial)
    except OSError as exc:
        logger.warning("Could not remove %s: %s", partial, exc)


def _copy_and_check(
    copier: StorageCopier, data_dir: Path, base: Manifest | None
) -> list[Entry]:
    # Old files are checked on the previous snapshot while the copy runs;
    # returns those found damaged there.
    check = None
    if base is not None and copier.previous_dir:
        check = LinkCheck(Path(copier.previous_dir))
    try:
        copier.run(scan(data_dir), base)
    finally:
        damaged = check.damaged() if check is not None else []
    return damaged


def _check_databases(partial: Path) -> dict[str, int | None]:
    # PRAGMA integrity_check of each database copy in the new snapshot; then
    # the studies and instances of the index copy, for the COMPLETE marker.
    for name in layout.DATABASES:
        if (partial / name).exists():
            problem = integrity_problem(partial / name)
            if problem:
                raise SnapshotDamagedError(
                    f"the copy of {name} fails its integrity check: {problem}"
                )
    index = partial / layout.INDEX_DB
    return {
        table: count_rows(index, table) if index.exists() else None
        for table in ("studies", "instances")
    }


def _newest(target: Path) -> Snapshot | None:
    snapshots = list_snapshots(target)
    return snapshots[-1] if snapshots else None


def _open_manifest(snapshot: Snapshot | None) -> Manifest | None:
    # A previous snapshot whose manifest cannot be read is no base: copy all.
    if snapshot is None:
        return None
    try:
        return Manifest(snapshot.path / layout.MANIFEST)
    except sqlite3.Error as exc:
        logger.warning("Snapshot %s has an unreadable manifest (%s)", snapshot, exc)
        return None


def _log_success(result: BackupResult) -> None:
    logger.info(
        "Backup %s complete into %s: started %s, ended %s, %.1f s, %d files "
        "(%d copied, %d hardlinked), %s (%s written), %d old snapshot(s) removed",
        result.snapshot,
        result.target,
        f"{result.started_at:%H:%M:%S}",
        f"{result.finished_at:%H:%M:%S}",
        result.seconds,
        result.files,
        result.copied_files,
        result.linked_files,
        human_bytes(result.bytes),
        human_bytes(result.copied_bytes),
        len(result.removed),
    )
