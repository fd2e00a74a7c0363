"""The incremental copy of ``storage/`` into a new snapshot.

Stored files never change and their names carry their SHA-256, so a file
whose relative path (and size) the previous complete snapshot lists holds
the same bytes: it is hardlinked from there, costing no space and no I/O.
Every other file is copied, hashed on the way and fsynced, on a few threads
that lower their own CPU priority, so that the DICOM listener in the same
process comes first. A sample of the copies is read back from the backup
disk while the other copies go on. Where the backup disk cannot hardlink
(FAT and exFAT USB disks, some network shares) every file is copied and each
snapshot is a full copy.

The walk goes newest first, beside the previous manifest read in the same
order: the new files of the last days are found at once, and their copies
start (a folder's files together) while the calling thread walks the older
days and links them. The room a run needs is therefore checked as its new
files are found, each before it is copied.

Paths are plain strings here, not :class:`pathlib.Path`: an archive holds
hundreds of thousands of files, and the per-file cost is what shows.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from backup import layout
from backup.errors import BackupCancelledError, TargetFullError
from backup.files import copy_file, fsync_path, raise_if_full
from backup.manifest import Entry, Manifest, ManifestWriter
from backup.readback import CopySample, read_back

logger = logging.getLogger(__name__)

COPY_THREADS = 6
LINK_BATCH = 1000
WORKER_NICENESS = 10
ROOM_MARGIN_BYTES = 1_000_000
ROOM_MARGIN_FRACTION = 0.01
_NO_LINK_ERRNOS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP)


@dataclass(frozen=True, slots=True)
class Item:
    """A stored file to back up: its path relative to the snapshot, and size."""

    path: str
    size: int


@dataclass
class CopyStats:
    """What the storage copy did."""

    linked_files: int = 0
    linked_bytes: int = 0
    copied_files: int = 0
    copied_bytes: int = 0
    vanished: int = 0
    damaged_sources: list[str] = field(default_factory=list)
    no_hardlinks: bool = False


def scan(data_dir: Path) -> Iterator[Item]:
    """Yield every stored file of a data folder, newest first.

    The order is the reverse of the byte order of the relative paths (that
    of SQLite's ``ORDER BY path DESC``), one folder listing at a time.
    """
    try:
        fd = _open_folder(os.path.join(data_dir, layout.STORAGE_DIR))
    except FileNotFoundError:
        return
    try:
        for path, size in _walk(fd, layout.STORAGE_DIR):
            yield Item(path, size)
    finally:
        os.close(fd)


def split(
    items: Iterable[Item], previous: Manifest | None
) -> Iterator[tuple[Item, Entry | None]]:
    """Pair each of `items` (newest first) with the entry to hardlink, if any.

    A file is linked only if the previous snapshot lists the same path with
    the same size and the hash its name carries; otherwise it comes with
    None and is copied. Both are read once, side by side, newest first.
    """
    known = previous.entries(newest_first=True) if previous else iter(())
    entry = next(known, None)
    for item in items:
        while entry is not None and entry.path > item.path:
            entry = next(known, None)
        if entry is not None and entry.path == item.path and _same(entry, item):
            yield item, entry
        else:
            yield item, None


class StorageCopier:
    """Fills a snapshot's ``storage/`` and records every file in its manifest.

    Parameters
    ----------
    data_dir : pathlib.Path
        The data folder backed up.
    snapshot_dir : pathlib.Path
        The new snapshot, still ``.partial``.
    previous_dir : pathlib.Path or None
        The previous complete snapshot, to hardlink from.
    manifest : ManifestWriter
        The new snapshot's manifest.
    cancel : threading.Event, optional
        Once set, the copy stops with :class:`BackupCancelledError`.
    verify_all : bool
        Read every copy back from the backup disk, not a sample.
    check_room : callable, optional
        Called with the bytes the run needs so far (new files and a margin)
        before each copy starts; raises :class:`TargetFullError` when the
        disk cannot hold them. None checks nothing.
    """

    def __init__(
        self,
        data_dir: Path,
        snapshot_dir: Path,
        previous_dir: Path | None,
        manifest: ManifestWriter,
        cancel: threading.Event | None = None,
        verify_all: bool = False,
        check_room: Callable[[int], None] | None = None,
    ) -> None:
        self.data_dir = str(data_dir)
        self.snapshot_dir = str(snapshot_dir)
        self.previous_dir = str(previous_dir) if previous_dir else ""
        self.manifest = manifest
        self.cancel = cancel
        self.check_room = check_room
        self.stats = CopyStats()
        self._folders: set[str] = set()
        self._links = _LinkFolders(self.previous_dir, self._folder_for)
        self._sample = CopySample(every=verify_all)
        self._planned_bytes = 0

    def run(self, planned: Iterable[tuple[Item, Entry | None]]) -> None:
        """Link or copy every file of `planned`, as :func:`split` pairs them.

        Links are made on this thread as the walk goes; a folder's new files
        are handed to worker threads (which read a sample of the copies
        back) as soon as the walk leaves it, and recorded once it is done.

        Raises
        ------
        TargetFullError
            When the new files need more room than the disk has.
        """
        pool = worker_pool("backup")
        try:
            copies = self._link_and_start_copies(planned, pool)
            self._collect(copies)
            self.sync_folders(pool)
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        finally:
            self._links.close()
        pool.shutdown()

    def holds_link(self, entry: Entry) -> bool:
        """Tell whether this snapshot's file is the previous snapshot's inode."""
        try:
            return os.path.samefile(
                os.path.join(self.previous_dir, entry.path),
                os.path.join(self.snapshot_dir, entry.path),
            )
        except OSError:
            return False

    def copy_again(self, entry: Entry) -> Entry | None:
        """Replace a snapshot file by a fresh copy from the data folder."""
        os.unlink(os.path.join(self.snapshot_dir, entry.path))
        fresh = self._copy(Item(entry.path, entry.size))
        fsync_path(Path(self.snapshot_dir, entry.path).parent)
        return fresh

    def sync_folders(self, pool: ThreadPoolExecutor) -> None:
        """fsync every folder that received entries, on the pool's threads.

        All of them are done before the snapshot is marked complete, so
        their order does not matter; side by side, the disk flushes that
        each ``fsync`` of a folder asks for are merged (three times faster
        than one after the other, measured on ext4).
        """
        for _done in pool.map(fsync_path, map(Path, self._folders)):
            pass

    def check_cancel(self) -> None:
        """Stop the run if it was cancelled.

        Raises
        ------
        BackupCancelledError
            Once the cancel event is set.
        """
        if self.cancel is not None and self.cancel.is_set():
            raise BackupCancelledError("the backup was cancelled before it completed")

    def _link_and_start_copies(
        self, planned: Iterable[tuple[Item, Entry | None]], pool: ThreadPoolExecutor
    ) -> list[tuple[Item, Future[Entry | None]]]:
        # A folder's new files start together once the walk leaves it, so
        # that the copies read back are drawn at random among them.
        copies: list[tuple[Item, Future[Entry | None]]] = []
        linked: list[Entry] = []
        found: list[Item] = []
        planned = iter(planned)
        for item, entry in planned:
            if found and _folder(found[0].path) != _folder(item.path):
                copies += self._start_copies(found, pool)
                found = []
            if entry is not None and self._link(entry):
                linked.append(entry)
                if len(linked) >= LINK_BATCH:
                    self._record_links(linked)
                    linked = []
                continue
            self._make_room(item, planned)
            found.append(item)
        copies += self._start_copies(found, pool)
        self._record_links(linked)
        return copies

    def _start_copies(
        self, items: list[Item], pool: ThreadPoolExecutor
    ) -> list[tuple[Item, Future[Entry | None]]]:
        if not items:
            return []
        self._folder_for(items[0].path)
        checks = self._sample.choose([item.size for item in items])
        return [
            (item, pool.submit(self._copy, item, check))
            for item, check in zip(items, checks, strict=True)
        ]

    def _record_links(self, linked: list[Entry]) -> None:
        self.check_cancel()
        self.manifest.add_many(linked)
        self.stats.linked_files += len(linked)
        self.stats.linked_bytes += sum(entry.size for entry in linked)

    def _make_room(self, item: Item, rest: Iterator[tuple[Item, Entry | None]]) -> None:
        # The new files so far and a margin for folders and the manifest; on
        # failure, the whole need is told (the rest of the walk, unlinked).
        self._planned_bytes += item.size
        if self.check_room is None:
            return
        try:
            self.check_room(with_margin(self._planned_bytes))
        except TargetFullError:
            rest_bytes = sum(other.size for other, entry in rest if entry is None)
            self.check_room(with_margin(self._planned_bytes + rest_bytes))
            raise

    def _collect(self, copies: list[tuple[Item, Future[Entry | None]]]) -> None:
        for item, future in copies:
            entry = future.result()
            if entry is None:
                self.stats.vanished += 1
                continue
            self._record_copy(item, entry)

    def _link(self, entry: Entry) -> bool:
        if self.stats.no_hardlinks:
            return False
        try:
            return self._links.link(entry.path)
        except OSError as exc:
            raise_if_full(exc, Path(self.snapshot_dir, entry.path))
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
            logger.warning(
                "The backup disk refuses hardlinks (%s): every snapshot is a "
                "full copy there",
                exc.strerror,
            )
            self.stats.no_hardlinks = True
            return False

    def _copy(self, item: Item, check: bool = False) -> Entry | None:
        # On a worker; `check` reads the copy back once it is fsynced.
        self.check_cancel()
        source = Path(self.data_dir, item.path)
        try:
            copied = copy_file(source, Path(self.snapshot_dir, item.path))
        except FileNotFoundError:
            if source.exists():
                raise
            return None
        entry = Entry(item.path, copied.size, copied.sha256)
        if check:
            read_back(Path(self.snapshot_dir), entry)
        return entry

    def _record_copy(self, item: Item, entry: Entry) -> None:
        self.manifest.add(entry)
        self.stats.copied_files += 1
        self.stats.copied_bytes += entry.size
        expected = layout.hash_in_name(_name(item.path))
        if expected is not None and expected != entry.sha256:
            self.stats.damaged_sources.append(item.path)
            logger.error(
                "Stored file %s does not match the hash in its name: the data "
                "disk may be failing; run 'appliance check --deep'",
                item.path,
            )

    def _folder_for(self, relative: str) -> str:
        folder = os.path.join(self.snapshot_dir, relative.rpartition("/")[0])
        if folder not in self._folders:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                raise_if_full(exc, Path(folder))
                raise
            parent = folder
            while parent != self.snapshot_dir and parent not in self._folders:
                self._folders.add(parent)
                parent = os.path.dirname(parent)
        return folder


class _LinkFolders:
    """Hardlinks by name between one folder pair at a time, held open.

    Files come folder by folder, so each link names only the file, relative
    to open folders, and the kernel does not resolve two long paths a link:
    that made linking about a quarter faster.
    """

    def __init__(self, previous_dir: str, make_folder: Callable[[str], str]) -> None:
        self.previous_dir = previous_dir
        self.make_folder = make_folder
        self.folder: str | None = None
        self.source = -1
        self.target = -1

    def link(self, relative: str) -> bool:
        """Link one file from the previous snapshot; False if it is not there."""
        folder, _, name = relative.rpartition("/")
        if folder != self.folder:
            self._open(folder, relative)
        if self.source < 0:
            return False
        try:
            os.link(name, name, src_dir_fd=self.source, dst_dir_fd=self.target)
        except FileNotFoundError:
            return False
        return True

    def close(self) -> None:
        """Close the open folders."""
        for fd in (self.source, self.target):
            if fd >= 0:
                os.close(fd)
        self.folder, self.source, self.target = None, -1, -1

    def _open(self, folder: str, relative: str) -> None:
        self.close()
        self.folder = folder
        try:
            self.source = _open_folder(os.path.join(self.previous_dir, folder))
        except FileNotFoundError:
            return
        self.target = _open_folder(self.make_folder(relative))


def worker_pool(name: str) -> ThreadPoolExecutor:
    """Return a pool whose threads run at a lower CPU priority than the rest.

    On Linux a thread's nice value is its own, so the listener's threads in
    the same process keep theirs.
    """
    return ThreadPoolExecutor(
        COPY_THREADS, thread_name_prefix=name, initializer=_lower_priority
    )


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
    except (OSError, AttributeError):
        pass


def with_margin(new_bytes: int) -> int:
    """Return the room that copying `new_bytes` needs on the backup disk."""
    return new_bytes + ROOM_MARGIN_BYTES + int(new_bytes * ROOM_MARGIN_FRACTION)


def _open_folder(path: str, parent: int | None = None) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY, dir_fd=parent)


def _same(entry: Entry, item: Item) -> bool:
    return entry.size == item.size and entry.sha256 == layout.hash_in_name(
        _name(item.path)
    )


def _name(relative: str) -> str:
    return relative.rpartition("/")[2]


def _folder(relative: str) -> str:
    return relative.rpartition("/")[0]


def _walk(folder: int, relative: str) -> Iterator[tuple[str, int]]:
    # Depth first, each listing sorted newest first (a folder's name sorts
    # as if followed by "/", as in its files' paths); a folder or file that
    # vanishes midway is skipped. Listed and stat'ed through the open
    # folder, so that the kernel resolves names, not whole paths.
    with os.scandir(folder) as listing:
        entries = sorted(listing, key=_path_order, reverse=True)
    for entry in entries:
        path = f"{relative}/{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            try:
                inner = _open_folder(entry.name, folder)
            except FileNotFoundError:
                continue
            try:
                yield from _walk(inner, path)
            finally:
                os.close(inner)
        elif entry.is_file(follow_symlinks=False):
            try:
                yield path, entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue


def _path_order(entry: os.DirEntry[str]) -> str:
    return entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name
