"""Retention keeps 7 daily, 4 weekly and 12 monthly snapshots by default."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from backup import Retention, list_snapshots
from backup.retention import kept
from tests.backup_helpers import add_files, backup, make_data_dir

# A Wednesday; local time, as the appliance's clock would give it.
NOW = datetime(2024, 6, 12, 2, 30).astimezone()


@dataclass(frozen=True)
class Dated:
    name: str
    started_at: datetime


def nightly(days: int, end: datetime = NOW) -> list[Dated]:
    """One snapshot a night for `days` nights up to `end`."""
    return [
        Dated(f"{end - timedelta(days=n):%Y-%m-%d}", end - timedelta(days=n))
        for n in range(days)
    ]


def test_a_year_of_nightly_snapshots_keeps_the_right_set() -> None:
    keep = kept(nightly(400), Retention(), NOW)

    daily = {f"2024-06-{day:02d}" for day in range(6, 13)}
    # Newest of the 4 most recent ISO weeks: Sundays, and this week's Wednesday.
    weekly = {"2024-06-12", "2024-06-09", "2024-06-02", "2024-05-26"}
    # Newest of each of the 12 most recent months: their last days.
    monthly = {"2024-06-12", "2024-05-31", "2024-04-30", "2024-03-31"}
    monthly |= {"2024-02-29", "2024-01-31", "2023-12-31", "2023-11-30"}
    monthly |= {"2023-10-31", "2023-09-30", "2023-08-31", "2023-07-31"}
    assert keep == daily | weekly | monthly
    assert len(keep) == 7 + 2 + 11  # 9 June is daily too; 12 June all three


def test_only_the_newest_of_a_day_counts() -> None:
    morning = NOW.replace(hour=9)
    evening = NOW.replace(hour=18)
    snapshots = [Dated("a", NOW), Dated("b", morning), Dated("c", evening)]

    assert kept(snapshots, Retention(daily=1, weekly=0, monthly=0), evening) == {"c"}


def test_the_newest_is_kept_even_when_nothing_else_is() -> None:
    snapshots = nightly(10)

    assert kept(snapshots, Retention(0, 0, 0), NOW) == {snapshots[0].name}


def test_a_gap_does_not_cost_older_snapshots() -> None:
    # The disk was away for two months: the 7 newest days with a snapshot
    # are kept, not only the days of the last week.
    old = nightly(10, end=NOW - timedelta(days=60))
    newest = Dated("back", NOW)

    keep = kept([*old, newest], Retention(daily=7, weekly=0, monthly=0), NOW)

    assert keep == {"back", *(s.name for s in old[:6])}


def test_snapshots_dated_in_the_future_are_kept() -> None:
    future = Dated("future", NOW + timedelta(days=3))
    snapshots = [future, *nightly(30)]

    keep = kept(snapshots, Retention(daily=1, weekly=0, monthly=0), NOW)

    assert keep == {"future"} | {snapshots[1].name}


def test_runs_prune_old_snapshots_by_their_dates(tmp_path: Path) -> None:
    data_dir = make_data_dir(tmp_path, files=3)
    target = tmp_path / "backups"
    target.mkdir()
    policy = Retention(daily=3, weekly=2, monthly=1)

    for night in range(12):
        add_files(data_dir, 1)
        when = NOW - timedelta(days=11 - night)
        result = backup(data_dir, target, now=when, retention=policy)
        assert result.ok, result.error

    names = [s.started_at.date().isoformat() for s in list_snapshots(target)]
    # 3 daily (10, 11, 12 June), the newest of last week (Sunday 9 June),
    # and the month's newest (12 June, already kept).
    assert names == ["2024-06-09", "2024-06-10", "2024-06-11", "2024-06-12"]
    assert sorted(p.name for p in target.iterdir() if p.name[0] != ".") == sorted(
        s.name for s in list_snapshots(target)
    )


def test_the_snapshot_just_made_is_never_removed(tmp_path: Path) -> None:
    # Its clock says it is older than the others (someone set it back).
    data_dir = make_data_dir(tmp_path, files=2)
    target = tmp_path / "backups"
    target.mkdir()
    policy = Retention(daily=1, weekly=0, monthly=0)
    backup(data_dir, target, now=NOW, retention=policy)

    earlier = backup(data_dir, target, now=NOW - timedelta(days=5), retention=policy)

    assert earlier.ok
    assert earlier.snapshot in {s.name for s in list_snapshots(target)}
