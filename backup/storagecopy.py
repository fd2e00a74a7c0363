"""The incremental copy of ``storage/`` into a new snapshot.

Stored files never change and their names carry their SHA-256. A file that
the previous complete snapshot lists under the same path, with the hash its
name carries, is therefore hardlinked from there, costing no space and no
I/O; the data folder's own copy is not even read. (So a stored file damaged
on the data disk after its first backup keeps its good copy in every later
snapshot; ``appliance check --deep`` is what finds the damage there.) Every
other file is copied, hashed on the way and fsynced, on a few threads that
lower their own CPU priority, so that the DICOM listener in the same process
comes first. A sample of the copies is read back from the backup disk while
the other copies go on. Where the backup disk cannot hardlink (FAT and exFAT
USB disks, some network shares) every file is copied and each snapshot is a
full copy.

The walk goes folder by folder, newest first: the new files of the last
days are found at once, and their copies start (a folder's files together)
while the calling thread walks the older days and links them. The room a
run needs is therefore checked as its new files are found, each before it
is copied.

Paths are plain strings here, not :class:`pathlib.Path`, and files are
handled a folder at a time, by name, through open folders: an archive holds
hundreds of thousands of files, the per-file cost is what shows, and the
calling thread shares the processor with the copies.
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
from backup.manifest import Entry, Listed, Manifest, ManifestWriter
from backup.readback import CopySample, read_back

logger = logging.getLogger(__name__)

COPY_THREADS = 6
WORKER_NICENESS = 10
ROOM_MARGIN_BYTES = 1_000_000
ROOM_MARGIN_FRACTION = 0.01
_NO_LINK_ERRNOS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP)


@dataclass(frozen=True, slots=True)
class Folder:
    """A folder of stored files, as the walk finds it.

    ``fd`` is the folder itself, open while the walk is in it (until the
    next folder is asked for): its files are looked up by name relative to
    it, so that the kernel resolves one name, not a whole path.
    """

    path: str
    fd: int
    names: list[str]


@dataclass(frozen=True, slots=True)
class Item:
    """A stored file to copy: its path relative to the snapshot, and size."""

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


def scan(data_dir: Path) -> Iterator[Folder]:
    """Yield every folder of a data folder's ``storage/`` that holds files.

    Folders come newest first (the reverse order of their paths), and so do
    the names in each; a folder that vanishes midway is skipped.
    """
    try:
        fd = _open_folder(os.path.join(data_dir, layout.STORAGE_DIR))
    except FileNotFoundError:
        return
    try:
        yield from _walk(fd, layout.STORAGE_DIR)
    finally:
        os.close(fd)


def linkable(name: str, listed: Listed | None) -> bool:
    """Tell whether a stored file may be hardlinked from the previous snapshot.

    Only when that snapshot lists it (`listed`, by the same path; None if
    not at all) with the hash the file's name carries: the copy there then
    holds the bytes the file was stored with. A copy made from a damaged
    stored file was listed with the hash of what was read, and is copied
    again instead.
    """
    return listed is not None and layout.hash_in_name(name) == listed.sha256


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
        self._sample = CopySample(every=verify_all)
        self._planned_bytes = 0

    def run(self, folders: Iterable[Folder], previous: Manifest | None) -> None:
        """Link or copy every file of `folders`, as :func:`scan` finds them.

        Links are made on this thread, a folder at a time, with what
        `previous` (the previous snapshot's manifest, or None) lists there;
        a folder's other files are handed to worker threads (which read a
        sample of the copies back) and recorded once they are done.

        Raises
        ------
        TargetFullError
            When the new files need more room than the disk has.
        """
        pool = worker_pool("backup")
        try:
            copies: list[tuple[Item, Future[Entry | None]]] = []
            folders = iter(folders)
            for folder in folders:
                self.check_cancel()
                listed = previous.folder(folder.path) if previous else {}
                unlinked = self._link_folder(folder, listed)
                new = self._plan_copies(folder, unlinked, folders, previous)
                copies += self._start_copies(new, pool)
            self._collect(copies)
            self.sync_folders(pool)
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
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

    def _link_folder(self, folder: Folder, listed: dict[str, Listed]) -> list[str]:
        # Links what the previous snapshot holds, by name between the two
        # open folders; returns the names left to copy. The loop is kept
        # bare: it runs once for every file of the archive.
        if not listed or self.stats.no_hardlinks:
            return folder.names
        target = self._folder_for(folder.path)
        try:
            source = _open_folder(os.path.join(self.previous_dir, folder.path))
        except FileNotFoundError:
            return folder.names
        linked: list[Entry] = []
        unlinked: list[str] = []
        try:
            target_fd = _open_folder(target)
            try:
                for index, name in enumerate(folder.names):
                    found = listed.get(name)
                    if found is None or not linkable(name, found):
                        unlinked.append(name)
                    elif self._link(name, source, target_fd, folder.path):
                        linked.append(Entry(f"{folder.path}/{name}", *found))
                    elif self.stats.no_hardlinks:
                        unlinked += folder.names[index:]
                        break
                    else:
                        unlinked.append(name)
            finally:
                os.close(target_fd)
        finally:
            os.close(source)
        self._record_links(linked)
        return unlinked

    def _link(self, name: str, source: int, target: int, folder: str) -> bool:
        # False when the previous snapshot lacks the file or the disk
        # refuses hardlinks (then noted in the stats, once).
        try:
            os.link(name, name, src_dir_fd=source, dst_dir_fd=target)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise_if_full(exc, Path(self.snapshot_dir, folder, name))
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
            logger.warning(
                "The backup disk refuses hardlinks (%s): every snapshot is a "
                "full copy there",
                exc.strerror,
            )
            self.stats.no_hardlinks = True
            return False
        return True

    def _plan_copies(
        self,
        folder: Folder,
        names: list[str],
        rest: Iterator[Folder],
        previous: Manifest | None,
    ) -> list[Item]:
        # The files to copy, with their sizes, once the room for them is
        # checked; on failure, the whole need is told (the rest of the walk).
        items = _sized(folder, names)
        for item in items:
            self._planned_bytes += item.size
            if self.check_room is None:
                continue
            try:
                self.check_room(with_margin(self._planned_bytes))
            except TargetFullError:
                unplanned = _bytes_to_copy(rest, previous)
                self.check_room(with_margin(self._planned_bytes + unplanned))
                raise
        return items

    def _start_copies(
        self, items: list[Item], pool: ThreadPoolExecutor
    ) -> list[tuple[Item, Future[Entry | None]]]:
        if not items:
            return []
        self._folder_for(_folder(items[0].path))
        checks = self._sample.choose([item.size for item in items])
        return [
            (item, pool.submit(self._copy, item, check))
            for item, check in zip(items, checks, strict=True)
        ]

    def _record_links(self, linked: list[Entry]) -> None:
        self.manifest.add_many(linked)
        self.stats.linked_files += len(linked)
        self.stats.linked_bytes += sum(entry.size for entry in linked)

    def _collect(self, copies: list[tuple[Item, Future[Entry | None]]]) -> None:
        for item, future in copies:
            entry = future.result()
            if entry is None:
                self.stats.vanished += 1
                continue
            self._record_copy(item, entry)

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

    def _folder_for(self, relative_folder: str) -> str:
        # Creates a folder of the snapshot (and its parents) once, noting
        # each for the fsync at the end.
        folder = os.path.join(self.snapshot_dir, relative_folder)
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


def _name(relative: str) -> str:
    return relative.rpartition("/")[2]


def _folder(relative: str) -> str:
    return relative.rpartition("/")[0]


def _sized(folder: Folder, names: list[str]) -> list[Item]:
    # The files' sizes, looked up in the open folder; a file removed since
    # the folder was listed is left out.
    items = []
    for name in names:
        try:
            size = os.stat(name, dir_fd=folder.fd, follow_symlinks=False).st_size
        except FileNotFoundError:
            continue
        items.append(Item(f"{folder.path}/{name}", size))
    return items


def _bytes_to_copy(folders: Iterator[Folder], previous: Manifest | None) -> int:
    # What the rest of the walk would copy, for the message of a full disk.
    total = 0
    for folder in folders:
        listed = previous.folder(folder.path) if previous else {}
        names = [name for name in folder.names if not linkable(name, listed.get(name))]
        total += sum(item.size for item in _sized(folder, names))
    return total


def _walk(fd: int, relative: str) -> Iterator[Folder]:
    # Depth first, newest first; a folder that vanishes midway is skipped.
    files: list[str] = []
    folders: list[str] = []
    with os.scandir(fd) as listing:
        for entry in listing:
            if entry.is_dir(follow_symlinks=False):
                folders.append(entry.name)
            elif entry.is_file(follow_symlinks=False):
                files.append(entry.name)
    if files:
        yield Folder(relative, fd, sorted(files, reverse=True))
    for name in sorted(folders, reverse=True):
        try:
            inner = _open_folder(name, fd)
        except FileNotFoundError:
            continue
        try:
            yield from _walk(inner, f"{relative}/{name}")
        finally:
            os.close(inner)
