"""Reading files back from the backup disk during a run.

Every file a run copies is hashed from the bytes copied; what reaches the
disk is checked by reading files back with their cached pages dropped:

- a sample of the files the run copied (all of them with ``verify_all``);
- a sample of the files it hardlinked, read from the previous snapshot
  while the copy runs, so that damage to old snapshots shows.

A sample is a share of the files, at least a few and at most a byte budget
a run, so that a run stays close to the time of a plain copy; ``appliance
backup verify`` reads everything.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backup.errors import BackupCancelledError, SnapshotDamagedError
from backup.files import hash_file
from backup.manifest import Entry

SAMPLE_FRACTION = 0.01
SAMPLE_MIN_FILES = 10
SAMPLE_MAX_BYTES = 32_000_000
THREADS = 2


def sample(entries: list[Entry]) -> list[Entry]:
    """Pick a random share of `entries`, within the run's byte budget."""
    wanted = max(SAMPLE_MIN_FILES, math.ceil(len(entries) * SAMPLE_FRACTION))
    chosen: list[Entry] = []
    budget = SAMPLE_MAX_BYTES
    for entry in random.sample(entries, min(wanted, len(entries))):
        if budget < entry.size and len(chosen) >= SAMPLE_MIN_FILES:
            break
        chosen.append(entry)
        budget -= entry.size
    return chosen


class LinkCheck:
    """Hashes a sample of the previous snapshot's files in the background.

    Parameters
    ----------
    previous_dir : pathlib.Path
        The previous complete snapshot.
    entries : list of Entry
        The files the run hardlinks from it.
    """

    def __init__(self, previous_dir: Path, entries: list[Entry]) -> None:
        self.previous_dir = previous_dir
        self.chosen = sample(entries)
        self._damaged: list[Entry] = []
        self._thread = threading.Thread(target=self._run, name="backup-check")
        self._thread.start()

    def damaged(self) -> list[Entry]:
        """Wait for the check; return the sampled files that differ."""
        self._thread.join()
        return self._damaged

    def _run(self) -> None:
        for entry in self.chosen:
            try:
                digest = hash_file(self.previous_dir / entry.path, from_disk=True)
            except OSError:
                digest = ""
            if digest != entry.sha256:
                self._damaged.append(entry)


def check_copies(
    snapshot_dir: Path,
    copied: list[Entry],
    *,
    every: bool,
    cancel: threading.Event | None,
) -> None:
    """Read copies back from the backup disk and compare their hashes.

    Raises
    ------
    SnapshotDamagedError
        If a copy reads back different from what was written.
    BackupCancelledError
        If `cancel` is set meanwhile.
    """
    chosen = copied if every else sample(copied)
    for entry, digest in zip(
        chosen, _hashes(snapshot_dir, chosen, cancel), strict=True
    ):
        if digest != entry.sha256:
            raise SnapshotDamagedError(
                f"{entry.path} reads back different from what was written: "
                "the backup disk may be failing"
            )


def _hashes(
    folder: Path, entries: list[Entry], cancel: threading.Event | None
) -> Iterator[str]:
    def rehash(entry: Entry) -> str:
        if cancel is not None and cancel.is_set():
            raise BackupCancelledError("the backup was cancelled before it completed")
        return hash_file(folder / entry.path, from_disk=True)

    with ThreadPoolExecutor(THREADS, thread_name_prefix="backup-check") as pool:
        yield from pool.map(rehash, entries)
