"""The backup banner every logged-in page shows when backups are in danger.

Every role sees it: a front desk is often the first to notice that the
backup disk was unplugged. Each warning from
:func:`backup.status.summary` comes with what to do about it. Working the
status out touches the backup disk and ``app.db``, so it is done at most
once a minute per process (:class:`BannerCache`); while one request works it
out, the others show the previous banner instead of waiting on a slow disk.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, current_app

from backup.job import BackupJob
from backup.status import BackupSummary

logger = logging.getLogger(__name__)

EXTENSION = "appliance.backup_banner"
REFRESH_SECONDS = 60.0
STATE_KINDS = ("missing", "read-only", "nearly full")

ADVICE = {
    "off": "Ask whoever set up the appliance to set a backup disk "
    "(the setting backup_dir).",
    "missing": "Plug the backup disk back in (or reconnect the network share). "
    "The next backup then runs by itself.",
    "read-only": "The disk may be failing, or it was connected read-only: have "
    "it checked, or replace it with another disk.",
    "nearly full": "Replace the backup disk with a larger one, or keep fewer "
    "old backups (the settings keep_daily, keep_weekly and keep_monthly).",
    "age": "Check that the backup disk is plugged in, then start a backup from "
    "the Backups page (or ask an admin to).",
}


@dataclass(frozen=True)
class Notice:
    """One banner line: what is wrong and what to do about it."""

    kind: str
    text: str
    advice: str


def notices(summary: BackupSummary) -> list[Notice]:
    """Pair each of the summary's warnings with advice, in the same order.

    :func:`backup.status.summary` lists the backup folder's trouble (off,
    missing, read-only, nearly full) first and the age of the last backup
    after it.
    """
    kinds: list[str] = []
    if not summary.enabled:
        kinds.append("off")
    elif summary.target_state in STATE_KINDS:
        kinds.append(summary.target_state)

    found = []
    for number, text in enumerate(summary.warnings):
        kind = kinds[number] if number < len(kinds) else "age"
        found.append(Notice(kind, text, ADVICE[kind]))
    return found


class BannerCache:
    """The banner's notices, worked out again at most every `seconds`.

    Parameters
    ----------
    compute : callable
        Works the notices out (slow: it looks at the backup disk).
    clock : callable
        Seconds, growing; tests pass one they move on.
    seconds : float
        How long a result is used before it is worked out again.
    """

    def __init__(
        self,
        compute: Callable[[], list[Notice]],
        clock: Callable[[], float],
        seconds: float = REFRESH_SECONDS,
    ) -> None:
        self._compute = compute
        self._clock = clock
        self._seconds = seconds
        self._lock = threading.Lock()
        self._notices: list[Notice] = []
        self._due: float | None = None
        self._refreshing = False

    def get(self) -> list[Notice]:
        """Return the notices, working them out first if they are due."""
        with self._lock:
            now = self._clock()
            # A clock set back counts as due, not as fresh for an hour.
            due = self._due
            fresh = due is not None and due - self._seconds <= now < due
            if fresh or self._refreshing:
                return self._notices
            self._refreshing = True

        # Outside the lock: other requests show the previous banner meanwhile.
        try:
            found = self._compute()
        except Exception:
            logger.exception("Could not work out the backup banner")
            found = None

        with self._lock:
            if found is not None:
                self._notices = found
            self._due = now + self._seconds
            self._refreshing = False
            return self._notices

    def put(self, found: list[Notice]) -> None:
        """Keep notices worked out elsewhere (the backup page's), as fresh."""
        with self._lock:
            self._notices = found
            self._due = self._clock() + self._seconds


def install_banner(
    app: Flask, backups: BackupJob | None, clock: Callable[[], float]
) -> None:
    """Give `app`'s templates ``backup_notices()``, cached per process.

    Parameters
    ----------
    app : flask.Flask
        The web app.
    backups : BackupJob or None
        The appliance's backups; None: no banner.
    clock : callable
        Seconds, for the cache (the web options' clock).
    """
    if backups is not None:
        app.extensions[EXTENSION] = BannerCache(
            lambda: notices(backups.summary()), clock
        )
    app.add_template_global(backup_notices)


def backup_notices() -> list[Notice]:
    """Return the banner's notices for the current app; none without backups."""
    cache: BannerCache | None = current_app.extensions.get(EXTENSION)
    return cache.get() if cache is not None else []


def refresh_banner(found: list[Notice]) -> None:
    """Show `found` in the banner from now on (the backup page's own status)."""
    cache: BannerCache | None = current_app.extensions.get(EXTENSION)
    if cache is not None:
        cache.put(found)
