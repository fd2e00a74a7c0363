"""Restore a snapshot into a data folder, keeping whatever it replaces.

Two steps, so that a wizard can run the long one while the appliance still
serves:

1. :func:`stage` checks the snapshot (marker, manifest, sizes, database
   integrity) and copies every file into a new folder next to the data
   folder, hashing each copy against the manifest. A damaged snapshot is
   refused before anything else is touched.
2. :func:`swap` moves the data folder aside (``DATA_DIR.before-restore-
   <time>``; never deleted) and the staged folder into its place, owned by
   the replaced folder's owner when run as root. The appliance must not be
   running on the data folder.

:func:`restore_snapshot` does both. When the data folder is a mount point it
cannot be renamed; its contents are moved instead, into
``DATA_DIR/.before-restore-<time>/``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from backup import layout
from backup.errors import RestoreRefusedError, SnapshotDamagedError
from backup.files import copy_file, fsync_path, make_folder, remove_tree
from backup.lock import TargetLock, data_folder_holder
from backup.manifest import Entry, Manifest
from backup.snapshots import Snapshot, find_snapshot
from backup.target import human_bytes
from backup.verify import check_snapshot

logger = logging.getLogger(__name__)

COPY_THREADS = 4
STAMP_FORMAT = "%Y%m%d-%H%M%S"

Progress = Callable[[int, int], None]
"""Called with (bytes restored, bytes to restore)."""


@dataclass(frozen=True)
class RestoreResult:
    """What a restore did."""

    snapshot: str
    data_dir: Path
    moved_aside: Path | None
    files: int
    bytes: int
    seconds: float


def restore_snapshot(
    reference: str | Path,
    data_dir: Path,
    *,
    target: Path | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore a snapshot into `data_dir`; the folder it replaces is kept.

    Parameters
    ----------
    reference : str or pathlib.Path
        A snapshot folder, a snapshot name in `target`, or ``latest``.
    data_dir : pathlib.Path
        The data folder to restore into; it may exist, or not.
    target : pathlib.Path, optional
        The backup folder, to look names up in.
    now : datetime, optional
        Stamps the name of the folder moved aside.
    progress : callable, optional
        Told the bytes restored so far and the total.

    Raises
    ------
    backup.errors.SnapshotNotFoundError
        If no snapshot goes by `reference`.
    backup.errors.SnapshotDamagedError
        If the snapshot is incomplete or fails verification.
    backup.errors.RestoreRefusedError
        If the appliance runs on `data_dir`.
    """
    clock = time.monotonic()
    snapshot = find_snapshot(reference, target)
    refuse_if_in_use(data_dir)
    with TargetLock(snapshot.path.parent, shared=True):
        staged = stage(snapshot, data_dir, progress=progress)
    try:
        moved = swap(staged, data_dir, now)
    except BaseException:
        remove_tree(staged)
        raise
    result = RestoreResult(
        snapshot.name,
        data_dir,
        moved,
        snapshot.files,
        snapshot.bytes,
        time.monotonic() - clock,
    )
    logger.info(
        "Restored snapshot %s into %s: %d stored files, %s, %.1f s; %s",
        snapshot.name,
        data_dir,
        result.files,
        human_bytes(result.bytes),
        result.seconds,
        f"the previous data is kept in {moved}" if moved else "nothing was replaced",
    )
    return result


def stage(
    snapshot: Snapshot, data_dir: Path, *, progress: Progress | None = None
) -> Path:
    """Check `snapshot` and copy it into a new folder beside `data_dir`.

    Returns
    -------
    pathlib.Path
        The staged folder, on the data folder's file system.

    Raises
    ------
    backup.errors.SnapshotDamagedError
        If the snapshot fails the quick check or a copy its hash; nothing is
        left behind.
    backup.errors.RestoreRefusedError
        If the data disk has no room for the snapshot.
    """
    check_snapshot(snapshot, deep=False)
    _check_room(snapshot, data_dir)
    staged = _staging_path(data_dir, datetime.now())
    make_folder(staged)
    try:
        _copy_snapshot(snapshot, staged, progress)
    except BaseException:
        remove_tree(staged)
        raise
    return staged


def swap(staged: Path, data_dir: Path, now: datetime | None = None) -> Path | None:
    """Put the staged folder in place of `data_dir`; return where the old went.

    Raises
    ------
    backup.errors.RestoreRefusedError
        If the appliance runs on `data_dir`.
    """
    stamp = (now or datetime.now()).strftime(STAMP_FORMAT)
    _match_owner(staged, data_dir)
    if _empty_folder(data_dir):
        data_dir.rmdir()
    if not data_dir.exists():
        os.rename(staged, data_dir)
        fsync_path(data_dir.parent)
        return None
    with _DataFolderLock(data_dir):
        if os.path.ismount(data_dir):
            return _swap_contents(staged, data_dir, stamp)
        aside = data_dir.with_name(f"{data_dir.name}.before-restore-{stamp}")
        os.rename(data_dir, aside)
        os.rename(staged, data_dir)
        fsync_path(data_dir.parent)
    return aside


def refuse_if_in_use(data_dir: Path) -> None:
    """Refuse to touch a data folder that the appliance is running on.

    Raises
    ------
    backup.errors.RestoreRefusedError
        Naming the process that holds it.
    """
    holder = data_folder_holder(data_dir)
    if holder is not None:
        raise RestoreRefusedError(
            f"{data_dir} is in use by {holder}; stop the appliance first "
            "(systemctl stop appliance)"
        )


def _copy_snapshot(snapshot: Snapshot, staged: Path, progress: Progress | None):
    with Manifest(snapshot.path / layout.MANIFEST) as manifest:
        entries = list(manifest.entries())
    total = sum(entry.size for entry in entries)
    folders = {staged / PurePosixPath(e.path).parent for e in entries}
    for folder in sorted(folders):
        make_folder(folder)

    done = 0
    with ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="restore") as pool:
        work = [(snapshot.path, staged, entry) for entry in entries]
        for entry in pool.map(lambda args: _copy_entry(*args), work):
            done += entry.size
            if progress is not None:
                progress(done, total)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        fsync_path(folder)


def _copy_entry(source_dir: Path, staged: Path, entry: Entry) -> Entry:
    copied = copy_file(source_dir / entry.path, staged / entry.path)
    if copied.sha256 != entry.sha256 or copied.size != entry.size:
        raise SnapshotDamagedError(
            f"snapshot {source_dir} is damaged: {entry.path} does not match its "
            "SHA-256 in the manifest; nothing was restored"
        )
    return entry


def _match_owner(staged: Path, data_dir: Path) -> None:
    # Run as root (sudo), a restore would leave root's files where the
    # service's user must write: give them the replaced folder's owner.
    if os.geteuid() != 0 or not data_dir.exists():
        return
    owner = data_dir.stat()
    os.chown(staged, owner.st_uid, owner.st_gid)
    os.chmod(staged, owner.st_mode & 0o7777)
    for root, folders, files in os.walk(staged):
        for name in folders + files:
            os.chown(os.path.join(root, name), owner.st_uid, owner.st_gid)


def _check_room(snapshot: Snapshot, data_dir: Path) -> None:
    # The data it replaces is kept, so both must fit on the data disk.
    existing = data_dir
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < snapshot.bytes:
        raise RestoreRefusedError(
            f"the restore needs {human_bytes(snapshot.bytes)} but {existing} has "
            f"{human_bytes(free)} free; make room first (the replaced data "
            "folder is kept)"
        )


def _empty_folder(path: Path) -> bool:
    # An empty data folder (a fresh install's) holds nothing worth keeping.
    return path.is_dir() and not os.path.ismount(path) and not any(path.iterdir())


def _staging_path(data_dir: Path, now: datetime) -> Path:
    stamp = now.strftime(STAMP_FORMAT)
    if data_dir.exists() and os.path.ismount(data_dir):
        return data_dir / f".restoring-{stamp}"
    return data_dir.with_name(f".{data_dir.name}.restoring-{stamp}")


def _swap_contents(staged: Path, data_dir: Path, stamp: str) -> Path:
    aside = data_dir / f".before-restore-{stamp}"
    aside.mkdir()
    for entry in os.scandir(data_dir):
        if entry.path not in (str(staged), str(aside)):
            os.rename(entry.path, aside / entry.name)
    for entry in os.scandir(staged):
        os.rename(entry.path, data_dir / entry.name)
    staged.rmdir()
    fsync_path(data_dir)
    return aside


class _DataFolderLock:
    """The appliance's own lock on a data folder, held while swapping."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / layout.DATA_LOCK
        self._fd: int | None = None

    def __enter__(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise
            raise RestoreRefusedError(
                f"{self.path.parent} is in use; stop the appliance first"
            ) from None
        self._fd = fd

    def __exit__(self, *_exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
