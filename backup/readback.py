"""Reading files back from the backup disk during a run.

Every file a run copies is hashed from the bytes copied; what reaches the
disk is checked by reading files back with their cached pages dropped:

- a sample of the files the run copied (all of them with ``verify_all``),
  each read back by the worker that copied it, right after its fsync,
  while the other copies go on;
- a sample of the stored files of the previous snapshot, which the run
  hardlinks, read from there while the copy runs, so that damage to old
  snapshots shows.

A sample is a share of the files, at least a few and at most a byte budget
a run, so that a run stays close to the time of a plain copy; ``appliance
backup verify`` reads everything.
"""

from __future__ import annotations

import logging
import math
import random
import sqlite3
import threading
from pathlib import Path

from backup import layout
from backup.errors import SnapshotDamagedError
from backup.files import hash_file
from backup.manifest import Entry, Manifest

logger = logging.getLogger(__name__)

SAMPLE_FRACTION = 0.01
SAMPLE_MIN_FILES = 10
SAMPLE_MAX_BYTES = 32_000_000


class CopySample:
    """Chooses the copies to read back, a folder's new files at a time.

    The walk meets the new files folder by folder and does not know how
    many are to come, so the draw is made in each folder: at random among
    its files, the first few of the run, then a share of the rest, within
    the run's byte budget.

    Parameters
    ----------
    every : bool
        Read every copy back (``verify_all``).
    """

    def __init__(self, every: bool = False) -> None:
        self.every = every
        self.count = 0
        self.budget = SAMPLE_MAX_BYTES

    def choose(self, sizes: list[int]) -> list[bool]:
        """Tell, for each of one folder's new files, whether to read it back."""
        chosen = [self.every] * len(sizes)
        if self.every:
            return chosen
        for index in random.sample(range(len(sizes)), len(sizes)):
            few = self.count < SAMPLE_MIN_FILES
            if not few and (
                sizes[index] > self.budget or random.random() >= SAMPLE_FRACTION
            ):
                continue
            chosen[index] = True
            self.count += 1
            self.budget -= sizes[index]
        return chosen


def sample_stored(manifest: Manifest) -> list[Entry]:
    """Pick a random share of a snapshot's stored files, within the budget.

    At least a few files, a share of them all, and no more than the byte
    budget once the few are in.
    """
    wanted = _wanted(manifest.count_under(layout.STORAGE_DIR))
    return _within_budget(manifest.random_under(layout.STORAGE_DIR, wanted))


def _wanted(count: int) -> int:
    return max(SAMPLE_MIN_FILES, math.ceil(count * SAMPLE_FRACTION))


def _within_budget(picked: list[Entry]) -> list[Entry]:
    chosen: list[Entry] = []
    budget = SAMPLE_MAX_BYTES
    for entry in picked:
        if budget < entry.size and len(chosen) >= SAMPLE_MIN_FILES:
            break
        chosen.append(entry)
        budget -= entry.size
    return chosen


class LinkCheck:
    """Hashes a sample of the previous snapshot's files in the background.

    The sample is drawn on the background thread too (see
    :func:`sample_stored`), from its own connection to the manifest.

    Parameters
    ----------
    previous_dir : pathlib.Path
        The previous complete snapshot.
    """

    def __init__(self, previous_dir: Path) -> None:
        self.previous_dir = previous_dir
        self._damaged: list[Entry] = []
        self._thread = threading.Thread(target=self._run, name="backup-check")
        self._thread.start()

    def damaged(self) -> list[Entry]:
        """Wait for the check; return the sampled files that differ."""
        self._thread.join()
        return self._damaged

    def _run(self) -> None:
        try:
            with Manifest(self.previous_dir / layout.MANIFEST) as manifest:
                chosen = sample_stored(manifest)
        except sqlite3.Error as exc:
            logger.warning(
                "Could not sample %s to check it: %s", self.previous_dir, exc
            )
            return
        for entry in chosen:
            try:
                digest = hash_file(self.previous_dir / entry.path, from_disk=True)
            except OSError:
                digest = ""
            if digest != entry.sha256:
                self._damaged.append(entry)


def read_back(snapshot_dir: Path, entry: Entry) -> None:
    """Hash a copy again from the backup disk and compare it with `entry`.

    Raises
    ------
    SnapshotDamagedError
        If the copy reads back different from what was written.
    """
    if hash_file(snapshot_dir / entry.path, from_disk=True) != entry.sha256:
        raise SnapshotDamagedError(
            f"{entry.path} reads back different from what was written: "
            "the backup disk may be failing"
        )
