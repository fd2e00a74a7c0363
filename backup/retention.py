"""Which snapshots to keep: so many daily, weekly and monthly ones.

By default the newest snapshot of each of the 7 most recent days that have
one, of each of the 4 most recent ISO weeks that have one, and of each of
the 12 most recent months that have one; a snapshot may count for several.
Days, weeks and months are those of the machine's local time when the
snapshot started. Periods without a snapshot do not count, so a backup disk
left unplugged for a month does not lose its older snapshots when it
returns. The newest complete snapshot is always kept, and so is any dated
after ``now`` (a clock set wrong: keep rather than guess); those do not
take the place of a period's snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from backup.snapshots import list_snapshots, remove

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    """How many daily, weekly and monthly snapshots to keep."""

    daily: int = 7
    weekly: int = 4
    monthly: int = 12


class Dated(Protocol):
    """Anything with a snapshot's name and start time."""

    @property
    def name(self) -> str: ...

    @property
    def started_at(self) -> datetime: ...


def kept(snapshots: Sequence[Dated], policy: Retention, now: datetime) -> set[str]:
    """Return the names of the snapshots `policy` keeps at `now`.

    Parameters
    ----------
    snapshots : Sequence
        Complete snapshots, in any order; ``started_at`` is timezone-aware.
    policy : Retention
        How many of each period to keep.
    now : datetime
        The current time, timezone-aware.
    """
    newest_first = sorted(snapshots, key=lambda s: (s.started_at, s.name), reverse=True)
    keep = {s.name for s in newest_first[:1]}
    keep |= {s.name for s in newest_first if s.started_at > now}
    past = [s for s in newest_first if s.started_at <= now]
    keep |= _newest_per_period(past, _day, policy.daily)
    keep |= _newest_per_period(past, _week, policy.weekly)
    keep |= _newest_per_period(past, _month, policy.monthly)
    return keep


def prune(
    target: Path, policy: Retention, now: datetime, protect: str = ""
) -> list[str]:
    """Remove the complete snapshots in `target` that `policy` does not keep.

    Parameters
    ----------
    target : pathlib.Path
        The backup folder.
    policy : Retention
        How many of each period to keep.
    now : datetime
        The current time, timezone-aware.
    protect : str
        A snapshot kept whatever the policy says: the one just made.

    Returns
    -------
    list of str
        The names removed, oldest first.
    """
    snapshots = list_snapshots(target)
    keep = kept(snapshots, policy, now) | {protect}
    removed = []
    for snapshot in snapshots:
        if snapshot.name in keep:
            continue
        remove(snapshot.path)
        removed.append(snapshot.name)
        logger.info("Removed snapshot %s (retention)", snapshot.name)
    return removed


def _newest_per_period(
    newest_first: Sequence[Dated], period: Callable[[datetime], Hashable], count: int
) -> set[str]:
    seen: set[Hashable] = set()
    names = set()
    for snapshot in newest_first:
        key = period(snapshot.started_at)
        if key in seen:
            continue
        if len(seen) == count:
            break
        seen.add(key)
        names.add(snapshot.name)
    return names


def _day(when: datetime) -> Hashable:
    return when.date()


def _week(when: datetime) -> Hashable:
    year, week, _ = when.isocalendar()
    return (year, week)


def _month(when: datetime) -> Hashable:
    return (when.year, when.month)
