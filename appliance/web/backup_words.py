"""Backup times and sizes in the words an owner reads: "yesterday 02:00".

The backup pages speak to an owner new to all this: a moment is "today",
"yesterday" or a date, an age is "26 hours ago", a size is "3.1 GB". The
filters here are registered on the app by :func:`register_backup_words`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Flask

from backup.history import RunRecord
from backup.target import human_bytes

WEEKDAY_RANGE = 6
TRIGGERS = {
    "schedule": "the nightly schedule",
    "web": "the web page",
    "command": "the command line",
}
TARGET_STATES = {
    "ok": "ready",
    "off": "none set",
    "missing": "not found",
    "read-only": "read-only",
    "nearly full": "nearly full",
}


def register_backup_words(app: Flask) -> None:
    """Add the filters ``moment``, ``age``, ``size``, ``outcome`` and others."""
    app.add_template_filter(moment, "moment")
    app.add_template_filter(age, "age")
    app.add_template_filter(size, "size")
    app.add_template_filter(outcome, "outcome")
    app.add_template_filter(started_by, "started_by")
    app.add_template_filter(disk_state, "disk_state")
    app.add_template_filter(count_of, "count_of")


def moment(when: datetime | None, now: datetime | None = None) -> str:
    """Say when, in local time: ``today 02:00``, ``yesterday 02:00``, a date.

    Parameters
    ----------
    when : datetime or None
        The moment; a naive one is taken as local time.
    now : datetime, optional
        The current time (tests); the computer's clock by default.
    """
    if when is None:
        return "never"

    local = when.astimezone()
    today = (now or datetime.now()).astimezone().date()
    days = (local.date() - today).days
    clock = f"{local:%H:%M}"
    if days == 0:
        return f"today {clock}"
    if days == -1:
        return f"yesterday {clock}"
    if days == 1:
        return f"tomorrow {clock}"
    if -WEEKDAY_RANGE <= days < 0:
        return f"{local:%A} {clock}"
    return f"{local:%Y-%m-%d} {clock}"


def age(delta: timedelta | None) -> str:
    """Say how long ago: ``just now``, ``12 minutes ago``, ``26 hours ago``."""
    if delta is None:
        return ""

    minutes = max(0, int(delta.total_seconds() // 60))
    if minutes < 1:
        return "just now"
    if minutes < 90:
        return f"{minutes} minute{'s' if minutes != 1 else ''} ago"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} hours ago"
    return f"{hours // 24} days ago"


def size(count: int | None) -> str:
    """Say a size in bytes the way disks are sold: ``3.1 GB``."""
    return "unknown" if count is None else human_bytes(count)


def outcome(run: RunRecord) -> str:
    """Say how a recorded backup run ended, in one short sentence."""
    if run.ok:
        return "Complete"
    reason = run.error.strip().rstrip(".") or "no reason was recorded"
    return f"Failed: {reason[:1].upper()}{reason[1:]}."


def started_by(trigger: str) -> str:
    """Say who started a run: ``the nightly schedule``, ``the web page``..."""
    return TRIGGERS.get(trigger, trigger)


def disk_state(state: str) -> str:
    """Say how the backup disk is: ``ready``, ``not found``, ``read-only``..."""
    return TARGET_STATES.get(state, state)


def count_of(count: int | None, one: str, many: str) -> str:
    """Say a count with its noun: ``1 study``, ``3 studies``, ``? studies``."""
    if count is None:
        return f"? {many}"
    return f"{count} {one if count == 1 else many}"
