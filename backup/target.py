"""The backup folder: is it there, writable, roomy, and not the data disk?

The folder must exist: the engine never creates it. A USB disk that is not
plugged in often leaves an empty mount point behind, and a backup written
there would silently fill the system disk instead.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from backup.errors import (
    TargetFullError,
    TargetMissingError,
    TargetReadOnlyError,
)

NEARLY_FULL_FRACTION = 0.05
NEARLY_FULL_MIN_BYTES = 1_000_000_000


@dataclass(frozen=True)
class Space:
    """Free and total bytes of the backup folder's file system."""

    free: int
    total: int


def check_target(target: Path, data_dir: Path) -> None:
    """Make sure a backup can be written into `target`.

    Raises
    ------
    TargetMissingError
        If the folder does not exist.
    TargetReadOnlyError
        If it is mounted read-only or not writable by this process.
    ValueError
        If it lies inside the data folder, or the data folder inside it.
    """
    if not target.is_dir():
        raise TargetMissingError(
            f"the backup folder {target} does not exist: is the backup disk "
            "plugged in and mounted?"
        )
    if read_only(target):
        raise TargetReadOnlyError(
            f"the backup folder {target} is read-only: backups cannot be written"
        )
    if _nested(target.resolve(), data_dir.resolve()):
        raise ValueError(
            f"backup_dir {target} and the data folder {data_dir} must not lie "
            "inside each other"
        )


def check_room(target: Path, needed: int, free: int | None = None) -> None:
    """Fail early when `target` cannot hold `needed` more bytes.

    Parameters
    ----------
    target : pathlib.Path
        The backup folder.
    needed : int
        The bytes a backup will write.
    free : int, optional
        The free bytes, as found when the run started; looked up if None.

    Raises
    ------
    TargetFullError
        Naming what is needed and what is free.
    """
    if free is None:
        free = space(target).free
    if free < needed:
        raise TargetFullError(
            f"the backup disk is full: {target} has {human_bytes(free)} free, "
            f"this backup needs about {human_bytes(needed)}"
        )


def read_only(target: Path) -> bool:
    """Tell whether `target` refuses writes (mount flag or permissions)."""
    try:
        flags = os.statvfs(target).f_flag
    except OSError:
        return False
    return bool(flags & os.ST_RDONLY) or not os.access(target, os.W_OK)


def space(target: Path) -> Space:
    """Return the free and total bytes where `target` lives."""
    usage = shutil.disk_usage(target)
    return Space(free=usage.free, total=usage.total)


def nearly_full(room: Space, expected: int) -> bool:
    """Tell whether the next backup might not fit, or little room is left.

    Nearly full means less free than the largest of: 5 % of the disk, 1 GB,
    and three times what the last backup wrote (`expected`).
    """
    floor = max(room.total * NEARLY_FULL_FRACTION, NEARLY_FULL_MIN_BYTES, 3 * expected)
    return room.free < floor


def same_disk(target: Path, data_dir: Path) -> bool:
    """Tell whether the backup folder is on the data folder's file system."""
    try:
        return os.stat(target).st_dev == os.stat(data_dir).st_dev
    except OSError:
        return False


def human_bytes(count: float) -> str:
    """Format a byte count for people: ``1.5 GB`` (powers of 1000)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def _nested(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)
