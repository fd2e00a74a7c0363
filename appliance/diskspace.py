"""Free disk space, the daily intake, and how many days are left.

Received files live under ``storage/YYYY/MM/DD/`` by day of receipt (local
time), so the intake of a day is the size of its folder. The average over
the last days, divided into the free space, estimates the days left.

Standard library only: the service logs a warning from it once a day, and
the web's status page shows the same estimate.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

logger = logging.getLogger(__name__)

INTAKE_DAYS = 14


@dataclass(frozen=True)
class DiskEstimate:
    """The data folder's disk, and how long it lasts at the current rate.

    Attributes
    ----------
    free_bytes : int
        Bytes the appliance may still write (the root reserve excluded).
    total_bytes : int
        Size of the file system.
    daily_bytes : float
        Average bytes received per day over the last days.
    days_left : float or None
        ``free_bytes / daily_bytes``; None while nothing arrives.
    """

    free_bytes: int
    total_bytes: int
    daily_bytes: float
    days_left: float | None


def free_bytes(path: Path) -> int:
    """Return the bytes an unprivileged process may still write at `path`."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def daily_intake(
    storage_dir: Path, days: int = INTAKE_DAYS, today: date | None = None
) -> float:
    """Return the average bytes received per day over the last `days` days.

    Today counts as one of them. A younger archive is averaged over the days
    since its first day, so that a new appliance is not judged idle.

    Parameters
    ----------
    storage_dir : pathlib.Path
        The ``storage/`` folder, holding ``YYYY/MM/DD`` folders.
    days : int
        How many days, up to and including today, to average.
    today : datetime.date, optional
        The last day to count; defaults to today's local date.
    """
    today = today or date.today()
    first = today - timedelta(days=days - 1)
    oldest = _first_day(storage_dir)
    if oldest is None or oldest > today:
        return 0.0

    total = 0
    for offset in range(days):
        day = first + timedelta(days=offset)
        total += _tree_bytes(storage_dir / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}")
    covered = (today - max(first, oldest)).days + 1
    return total / covered


def estimate(
    data_dir: Path, days: int = INTAKE_DAYS, today: date | None = None
) -> DiskEstimate:
    """Return the free space of `data_dir` and the days it lasts.

    Raises
    ------
    OSError
        If the data folder cannot be examined.
    """
    usage = shutil.disk_usage(data_dir)
    free = free_bytes(data_dir)
    daily = daily_intake(data_dir / "storage", days, today)
    return DiskEstimate(
        free_bytes=free,
        total_bytes=usage.total,
        daily_bytes=daily,
        days_left=free / daily if daily > 0 else None,
    )


def warn_if_low(data_dir: Path, warn_days: int) -> DiskEstimate | None:
    """Log a warning when the disk fills within `warn_days` at today's rate.

    Parameters
    ----------
    data_dir : pathlib.Path
        The appliance's data folder.
    warn_days : int
        Warn when fewer days than this are left; 0 never warns.

    Returns
    -------
    DiskEstimate or None
        The estimate, or None when the folder could not be examined (logged).
    """
    try:
        found = estimate(data_dir)
    except OSError:
        logger.exception("Could not estimate the free disk space of %s", data_dir)
        return None

    if found.days_left is not None and found.days_left < warn_days:
        logger.warning(
            "Disk space low: %.1f GB free in %s, about %.0f day(s) left"
            " at %.2f GB a day",
            found.free_bytes / 1e9,
            data_dir,
            found.days_left,
            found.daily_bytes / 1e9,
        )
    return found


def _first_day(storage_dir: Path) -> date | None:
    # The oldest YYYY/MM/DD folder: the lowest name at each of three levels.
    parts: list[int] = []
    folder = storage_dir
    for _level in range(3):
        names = sorted(_numeric_subfolders(folder))
        if not names:
            return None
        parts.append(int(names[0]))
        folder = folder / names[0]
    try:
        return date(parts[0], parts[1], parts[2])
    except ValueError:
        return None


def _numeric_subfolders(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [
                entry.name
                for entry in entries
                if entry.name.isdigit() and entry.is_dir(follow_symlinks=False)
            ]
    except FileNotFoundError:
        return []


def _tree_bytes(folder: Path) -> int:
    # Apparent sizes of the files below `folder`; a missing folder is 0.
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total
