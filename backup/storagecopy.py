"""The incremental copy of ``storage/`` into a new snapshot.

Stored files never change and their names carry their SHA-256, so a file
whose relative path (and size) the previous complete snapshot lists holds
the same bytes: it is hardlinked from there, costing no space and no I/O.
Every other file is copied, hashed on the way and fsynced, on a few threads
that lower their own CPU priority, so that the DICOM listener in the same
process comes first. Where the backup disk cannot hardlink (FAT and exFAT
USB disks, some network shares) every file is copied and each snapshot is a
full copy.

Paths are plain strings here, not :class:`pathlib.Path`: an archive holds
hundreds of thousands of files, and the per-file cost is what shows.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from backup import layout
from backup.errors import BackupCancelledError
from backup.files import copy_file, fsync_path, raise_if_full
from backup.manifest import Entry, Manifest, ManifestWriter

logger = logging.getLogger(__name__)

COPY_THREADS = 6
LINK_BATCH = 1000
WORKER_NICENESS = 10
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
    copied: list[Entry] = field(default_factory=list)
    damaged_sources: list[str] = field(default_factory=list)
    no_hardlinks: bool = False


def scan(data_dir: Path) -> list[Item]:
    """List every stored file of a data folder, sorted by path."""
    root = str(data_dir)
    prefix = len(root) + 1
    items = [
        Item(path[prefix:].replace(os.sep, "/"), size)
        for path, size in _walk(os.path.join(root, layout.STORAGE_DIR))
    ]
    items.sort(key=lambda item: item.path)
    return items


def split(
    items: list[Item], previous: Manifest | None
) -> tuple[list[Entry], list[Item]]:
    """Split sorted `items` into those to hardlink from `previous` and to copy.

    A file is linked only if the previous snapshot lists the same path with
    the same size and the hash its name carries. Both lists are walked once,
    side by side, in path order.
    """
    to_link: list[Entry] = []
    to_copy: list[Item] = []
    known = previous.entries() if previous is not None else iter(())
    entry = next(known, None)
    for item in items:
        while entry is not None and entry.path < item.path:
            entry = next(known, None)
        if entry is not None and entry.path == item.path and _same(entry, item):
            to_link.append(entry)
        else:
            to_copy.append(item)
    return to_link, to_copy


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
    """

    def __init__(
        self,
        data_dir: Path,
        snapshot_dir: Path,
        previous_dir: Path | None,
        manifest: ManifestWriter,
        cancel: threading.Event | None = None,
    ) -> None:
        self.data_dir = str(data_dir)
        self.snapshot_dir = str(snapshot_dir)
        self.previous_dir = str(previous_dir) if previous_dir else ""
        self.manifest = manifest
        self.cancel = cancel
        self.stats = CopyStats()
        self._folders: set[str] = set()

    def run(self, to_link: list[Entry], to_copy: list[Item]) -> list[Item]:
        """Copy `to_copy` on worker threads while this thread links `to_link`.

        Returns
        -------
        list of Item
            The files that could not be linked and were copied instead (the
            previous file is gone, or the disk refuses hardlinks).
        """
        for item in to_copy:
            self._folder_for(item.path)
        pool = worker_pool("backup")
        try:
            copies = pool.map(self._copy, to_copy)
            fallback = self._link_all(to_link)
            self._collect(to_copy, copies)
            for item in fallback:
                self._folder_for(item.path)
            self._collect(fallback, pool.map(self._copy, fallback))
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        pool.shutdown()
        self.sync_folders()
        return fallback

    def _link_all(self, entries: list[Entry]) -> list[Item]:
        fallback: list[Item] = []
        for start in range(0, len(entries), LINK_BATCH):
            self.check_cancel()
            linked = []
            for entry in entries[start : start + LINK_BATCH]:
                if self.stats.no_hardlinks or not self._link(entry):
                    fallback.append(Item(entry.path, entry.size))
                else:
                    linked.append(entry)
            self.manifest.add_many(linked)
            self.stats.linked_files += len(linked)
            self.stats.linked_bytes += sum(entry.size for entry in linked)
        return fallback

    def _collect(self, items: list[Item], copies: Iterator[Entry | None]) -> None:
        for item, entry in zip(items, copies, strict=True):
            if entry is None:
                self.stats.vanished += 1
                continue
            self._record_copy(item, entry)

    def copy_again(self, entry: Entry) -> Entry | None:
        """Replace a snapshot file by a fresh copy from the data folder."""
        os.unlink(os.path.join(self.snapshot_dir, entry.path))
        return self._copy(Item(entry.path, entry.size))

    def sync_folders(self) -> None:
        """fsync every folder that received entries, deepest first."""
        for folder in sorted(self._folders, key=len, reverse=True):
            fsync_path(Path(folder))

    def check_cancel(self) -> None:
        """Stop the run if it was cancelled.

        Raises
        ------
        BackupCancelledError
            Once the cancel event is set.
        """
        if self.cancel is not None and self.cancel.is_set():
            raise BackupCancelledError("the backup was cancelled before it completed")

    def _link(self, entry: Entry) -> bool:
        target = os.path.join(self._folder_for(entry.path), _name(entry.path))
        try:
            os.link(os.path.join(self.previous_dir, entry.path), target)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise_if_full(exc, Path(target))
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

    def _copy(self, item: Item) -> Entry | None:
        self.check_cancel()
        source = Path(self.data_dir, item.path)
        try:
            copied = copy_file(source, Path(self.snapshot_dir, item.path))
        except FileNotFoundError:
            if source.exists():
                raise
            return None
        return Entry(item.path, copied.size, copied.sha256)

    def _record_copy(self, item: Item, entry: Entry) -> None:
        self.manifest.add(entry)
        self.stats.copied.append(entry)
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


def _same(entry: Entry, item: Item) -> bool:
    return entry.size == item.size and entry.sha256 == layout.hash_in_name(
        _name(item.path)
    )


def _name(relative: str) -> str:
    return relative.rpartition("/")[2]


def _walk(root: str) -> Iterator[tuple[str, int]]:
    # Depth first; a folder or file that vanishes midway is skipped.
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                try:
                    yield entry.path, entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
