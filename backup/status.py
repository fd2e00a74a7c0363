"""Backup status for the admin page, the banner and ``appliance backup list``.

:func:`summary` gathers, without writing anything: the last complete backup
(from the history in ``app.db``, else from the snapshots on the disk), its
age and size, the latest attempt, the next scheduled run, the backup disk's
free space, and the warnings the banner shows to every user:

- backups are off (no backup folder set);
- the backup folder is missing (disk unplugged, share not mounted);
- it is read-only;
- it is nearly full (see :func:`backup.target.nearly_full`);
- the last complete backup is older than 36 hours, or there is none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path

from backup import history, target
from backup.history import RunRecord
from backup.lock import backup_running
from backup.snapshots import Snapshot, list_snapshots

STALE_AFTER = timedelta(hours=36)
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class BackupSummary:
    """Everything the admin page shows about backups; no patient data.

    ``target_state`` is one of ``off``, ``missing``, ``read-only``,
    ``nearly full`` or ``ok``. ``warnings`` are for the banner every user
    sees; ``notes`` only for the admin page.
    """

    enabled: bool
    target: Path | None
    target_state: str
    running: bool
    last_success: datetime | None
    last_success_age: timedelta | None
    last_snapshot: str | None
    last_size_bytes: int | None
    last_copied_bytes: int | None
    last_run: RunRecord | None
    next_run: datetime | None
    free_bytes: int | None
    total_bytes: int | None
    snapshots: tuple[Snapshot, ...]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]


def summary(
    target_dir: Path | None,
    app_db: Path,
    *,
    backup_time: str | None = None,
    data_dir: Path | None = None,
    now: datetime | None = None,
) -> BackupSummary:
    """Return the backup status; never raises for an unreachable target.

    Parameters
    ----------
    target_dir : pathlib.Path or None
        The configured backup folder; None when backups are off.
    app_db : pathlib.Path
        The appliance's ``app.db``, holding the history.
    backup_time : str, optional
        The nightly time, ``HH:MM`` local, for the next run.
    data_dir : pathlib.Path, optional
        The data folder, to note a backup folder on the same disk.
    now : datetime, optional
        The current time, timezone-aware.
    """
    now = now or datetime.now().astimezone()
    state, room, snapshots = _inspect(target_dir)
    runs = history.recent_runs(app_db, limit=1)
    success = _last_success(history.last_success(app_db), snapshots)
    when = success.finished_at if success else None
    expected = success.copied_bytes if success else 0

    if room is not None and state == "ok" and target.nearly_full(room, expected):
        state = "nearly full"
    notes = []
    if target_dir is not None and data_dir is not None and state != "missing":
        if target.same_disk(target_dir, data_dir):
            notes.append(
                "The backup folder is on the same disk as the data: it does not "
                "protect against that disk failing."
            )
    return BackupSummary(
        enabled=target_dir is not None,
        target=target_dir,
        target_state=state,
        running=target_dir is not None and backup_running(target_dir),
        last_success=when,
        last_success_age=now - when if when else None,
        last_snapshot=success.snapshot if success else None,
        last_size_bytes=success.bytes if success else None,
        last_copied_bytes=success.copied_bytes if success else None,
        last_run=runs[0] if runs else None,
        next_run=next_run(backup_time, now) if target_dir and backup_time else None,
        free_bytes=room.free if room else None,
        total_bytes=room.total if room else None,
        snapshots=tuple(snapshots),
        warnings=tuple(_warnings(target_dir, state, room, when, now)),
        notes=tuple(notes),
    )


def warnings(
    target_dir: Path | None, app_db: Path, *, now: datetime | None = None
) -> list[str]:
    """Return only the banner's warnings (see :func:`summary`)."""
    return list(summary(target_dir, app_db, now=now).warnings)


def next_run(backup_time: str, now: datetime) -> datetime:
    """Return the next local time `backup_time` (``HH:MM``) after `now`.

    Raises
    ------
    ValueError
        If `backup_time` is not ``HH:MM``.
    """
    hour, minute = parse_clock(backup_time)
    local = now.astimezone()
    candidate = datetime.combine(local.date(), time(hour, minute))
    candidate = candidate.astimezone()
    if candidate <= local:
        candidate = datetime.combine(
            local.date() + timedelta(days=1), time(hour, minute)
        ).astimezone()
    return candidate


def parse_clock(value: str) -> tuple[int, int]:
    """Return (hour, minute) of a ``HH:MM`` time of day.

    Raises
    ------
    ValueError
        Naming the value, if it is not a time of day.
    """
    match = _CLOCK.match(value.strip())
    if match is None:
        raise ValueError(f"expected a time of day as HH:MM, got {value!r}")
    return int(match[1]), int(match[2])


def _inspect(
    target_dir: Path | None,
) -> tuple[str, target.Space | None, list[Snapshot]]:
    if target_dir is None:
        return "off", None, []
    if not target_dir.is_dir():
        return "missing", None, []
    try:
        room = target.space(target_dir)
        snapshots = list_snapshots(target_dir)
    except OSError:
        return "missing", None, []
    state = "read-only" if target.read_only(target_dir) else "ok"
    return state, room, snapshots


@dataclass(frozen=True)
class _Success:
    finished_at: datetime
    snapshot: str
    bytes: int
    copied_bytes: int


def _last_success(
    record: RunRecord | None, snapshots: list[Snapshot]
) -> _Success | None:
    # The newer of the history's last success and the disk's newest snapshot:
    # the history survives an unplugged disk, the disk a lost history.
    found = []
    if record is not None:
        found.append(
            _Success(
                record.finished_at, record.snapshot, record.bytes, record.copied_bytes
            )
        )
    if snapshots:
        newest = snapshots[-1]
        found.append(
            _Success(newest.finished_at, newest.name, newest.bytes, newest.copied_bytes)
        )
    return max(found, key=lambda item: item.finished_at) if found else None


def _warnings(
    target_dir: Path | None,
    state: str,
    room: target.Space | None,
    when: datetime | None,
    now: datetime,
) -> list[str]:
    if target_dir is None:
        return ["Backups are off: no backup folder is set (setting backup_dir)."]
    found = []
    if state == "missing":
        found.append(
            f"The backup folder {target_dir} is missing: is the backup disk "
            "plugged in and mounted?"
        )
    elif state == "read-only":
        found.append(f"The backup folder {target_dir} is read-only.")
    elif state == "nearly full" and room is not None:
        found.append(
            f"The backup disk is nearly full: {target.human_bytes(room.free)} "
            f"free of {target.human_bytes(room.total)}."
        )
    if when is None:
        found.append("No backup has completed yet.")
    elif now - when > STALE_AFTER:
        hours = (now - when).total_seconds() / 3600
        found.append(
            f"The last complete backup is {hours:.0f} hours old "
            f"({when:%Y-%m-%d %H:%M})."
        )
    return found
