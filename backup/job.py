"""Backups in the serving process: the nightly run and "Back up now".

The appliance creates one :class:`BackupJob`, has its scheduler call
:meth:`BackupJob.run` every night, and hands the job to the web so that the
admin page can start a run (:meth:`BackupJob.start_now`) and show the status
(:meth:`BackupJob.summary`).

Each run is a child process, ``python -m backup run`` (:mod:`backup.runner`),
at idle CPU priority (nice 10 where that is refused): it then competes with
the DICOM listener for neither the interpreter lock nor the processor
(measured in ``bench/backup.py``). Its log lines go to the same standard
error as the appliance's. Runs are serialised by the backup folder's lock,
so a run from ``appliance backup run`` in another process is excluded too.
Every run that started is recorded in ``app.db``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

from backup import layout
from backup.engine import BackupResult
from backup.history import record_run
from backup.lock import backup_running
from backup.retention import Retention
from backup.runner import from_json
from backup.status import BackupSummary, summary

logger = logging.getLogger(__name__)

NICENESS = 10
STOP_SECONDS = 30.0


class BackupJob:
    """The backups of one data folder into one backup folder.

    Parameters
    ----------
    data_dir : pathlib.Path
        The data folder.
    target : pathlib.Path or None
        The backup folder; None when backups are off.
    retention : Retention
        What to keep.
    backup_time : str
        The nightly time, ``HH:MM`` local, shown as the next run.
    """

    def __init__(
        self,
        data_dir: Path,
        target: Path | None,
        retention: Retention,
        backup_time: str,
    ) -> None:
        self.data_dir = data_dir
        self.target = target
        self.retention = retention
        self.backup_time = backup_time
        self.app_db = data_dir / layout.APP_DB
        self._guard = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen[str] | None = None

    @property
    def enabled(self) -> bool:
        """True when a backup folder is set."""
        return self.target is not None

    def run(self, trigger: str = "schedule") -> BackupResult | None:
        """Back up now in a child process and wait for it.

        Returns
        -------
        BackupResult or None
            None when backups are off or the appliance is stopping.
        """
        if self.target is None:
            logger.info("Backup skipped: backups are off (backup_dir is not set)")
            return None
        with self._guard:
            if self._stopping:
                return None
            started = datetime.now().astimezone()
            self._child = subprocess.Popen(
                self._argv(self.target, trigger),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
            )
        output, _ = self._child.communicate()
        return self._result(output, self._child.returncode, trigger, started)

    def start_now(self, trigger: str = "web") -> bool:
        """Start a backup on a thread of its own and return at once.

        Returns
        -------
        bool
            False when backups are off or a backup is already running.
        """
        with self._guard:
            if not self.enabled or self._stopping or self.running():
                return False
            self._thread = threading.Thread(
                target=self._run_logged, args=(trigger,), name="backup", daemon=True
            )
            self._thread.start()
        return True

    def running(self) -> bool:
        """True while a backup into the backup folder runs, here or elsewhere."""
        if self._thread is not None and self._thread.is_alive():
            return True
        return self.target is not None and backup_running(self.target)

    def summary(self, now: datetime | None = None) -> BackupSummary:
        """Return the status for the admin page and the banner."""
        return summary(
            self.target,
            self.app_db,
            backup_time=self.backup_time,
            data_dir=self.data_dir,
            now=now,
        )

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a backup started by :meth:`start_now` to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Cancel a running backup and wait for it to end (the process stops).

        The child removes its unfinished snapshot and records the
        cancellation; it is killed if it takes longer than `timeout`.
        """
        with self._guard:
            self._stopping = True
            child = self._child
        if child is None or child.poll() is not None:
            return
        logger.info("Cancelling the running backup")
        child.terminate()
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
        self.wait(timeout)

    def _argv(self, target: Path, trigger: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "backup",
            "run",
            "--data-dir",
            str(self.data_dir),
            "--target",
            str(target),
            "--keep-daily",
            str(self.retention.daily),
            "--keep-weekly",
            str(self.retention.weekly),
            "--keep-monthly",
            str(self.retention.monthly),
            "--trigger",
            trigger,
            "--nice",
            str(NICENESS),
            "--idle",
            "--json",
        ]

    def _result(
        self, output: str, code: int, trigger: str, started: datetime
    ) -> BackupResult:
        # The child printed its (recorded) result last; without one it died
        # before recording, and the failure is recorded here.
        lines = output.strip().splitlines()
        try:
            return from_json(lines[-1])
        except (IndexError, ValueError):
            pass
        finished = datetime.now().astimezone()
        result = BackupResult(
            ok=False,
            trigger=trigger,
            target=str(self.target),
            started_at=started,
            finished_at=finished,
            seconds=(finished - started) / timedelta(seconds=1),
            error=f"the backup process ended with status {code} and no result",
        )
        logger.error("Backup failed: %s", result.error)
        record_run(self.app_db, result)
        return result

    def _run_logged(self, trigger: str) -> None:
        try:
            self.run(trigger)
        except Exception:
            logger.exception("The backup failed unexpectedly")
