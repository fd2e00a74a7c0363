"""Keeping ``index.db`` true to ``storage/`` in the serving process.

:class:`IndexKeeper` is the part of the :class:`~appliance.service.Appliance`
that heals the index:

- before the writer opens anything (:meth:`IndexKeeper.prepare`): take the
  data folder's lock, refuse a damaged ``app.db``, and move a damaged
  ``index.db`` aside;
- once the appliance serves (:meth:`IndexKeeper.start`): rebuild in the
  background if the index was damaged or missing, otherwise reconcile it
  with storage; schedule the weekly check; pick up rebuild requests from
  ``appliance rebuild-index`` and publish the rebuild's progress for it.

Long tasks (reconcile, rebuild, check) run one at a time. The command line
and a running service talk through files in ``DATA_DIR/maintenance/``:
``rebuild-request`` (written by the command) and ``rebuild-status.json``
(written by the service every second while it changes).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from appliance import db, scheduling
from appliance.datalock import DataFolderLock
from appliance.errors import DatabaseDamagedError
from appliance.index.check import CheckReport, run_check
from appliance.index.decisions import IdentityDecision
from appliance.index.rebuild import Rebuilder, RebuildFiles
from appliance.index.recovery import (
    ReconcileResult,
    diagnose_index,
    move_aside,
    reconcile,
    storage_has_files,
)
from appliance.index.status import RebuildStatus
from appliance.index.writer import IndexWriter
from appliance.state.checks import CheckRecord, latest_check, record_check
from appliance.state.identity import read_identity_rules
from appliance.state.schema import open_state
from appliance.storage import Storage

logger = logging.getLogger(__name__)

WORK_DIR_NAME = "maintenance"
REQUEST_NAME = "rebuild-request"
STATUS_NAME = "rebuild-status.json"
POLL_SECONDS = 1.0
WEEKLY_CHECK_DAY = "sun"
WEEKLY_CHECK_HOUR = 3
WEEKLY_CHECK_DEEP = True


def work_dir(data_dir: Path) -> Path:
    """Return the folder of rebuild scratch, reports and requests."""
    return data_dir / WORK_DIR_NAME


def verify_state_db(app_db: Path) -> None:
    """Refuse an ``app.db`` that is damaged; it is never replaced on its own.

    Raises
    ------
    DatabaseDamagedError
        With a one-line message that says how to restore it.
    """
    if not app_db.exists():
        return
    try:
        with closing(sqlite3.connect(f"file:{app_db}?mode=rw", uri=True)) as conn:
            verdict = [row[0] for row in conn.execute("PRAGMA quick_check")]
    except sqlite3.Error as exc:
        verdict = [str(exc)]
    if verdict != ["ok"]:
        raise DatabaseDamagedError(
            f"{app_db} is damaged ({verdict[0]}); the appliance will not start. "
            f"Stop it, move {app_db.name} away, copy {app_db.name} from your latest "
            "backup into its place, and start again"
        )


def load_identity_decisions(app_db: Path) -> list[IdentityDecision]:
    """Return the identity decisions in force in ``app.db``, oldest first."""
    return list(read_identity_rules(app_db).decisions)


class IndexKeeper:
    """Recovery, reconcile, rebuilds and checks for one data folder.

    Parameters
    ----------
    data_dir : pathlib.Path
        The data folder.
    index_db, app_db : pathlib.Path
        The two databases in it.
    storage : Storage
        Its stored files.
    writer : IndexWriter
        The index's one writer (started between :meth:`prepare` and
        :meth:`start`).
    role : str
        Who holds the data folder's lock, for whoever finds it taken.
    """

    def __init__(
        self,
        data_dir: Path,
        index_db: Path,
        app_db: Path,
        storage: Storage,
        writer: IndexWriter,
        role: str = "appliance serve",
    ) -> None:
        self.app_db = app_db
        self.storage = storage
        self.writer = writer
        self.files = RebuildFiles(index_db, work_dir(data_dir))
        self.status = RebuildStatus()
        self.lock = DataFolderLock(data_dir, role)
        self.cancel = threading.Event()
        self._task_lock = threading.Lock()
        self._task = "starting"  # until the first task (rebuild or reconcile) ends
        self._recovery = ""
        self._reconciled: ReconcileResult | None = None
        self._last_check: CheckRecord | None = None
        self._published: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []

    def prepare(self) -> None:
        """Lock the data folder and check both databases; before the writer.

        Raises
        ------
        appliance.datalock.DataFolderBusyError
            If another appliance process uses the data folder.
        DatabaseDamagedError
            If ``app.db`` is damaged.
        """
        self.lock.acquire()
        try:
            verify_state_db(self.app_db)
            self._warn_if_state_lost()
            self._recovery = self._recover_index()
        except BaseException:
            self.lock.release()
            raise

    def start(self, scheduler: BackgroundScheduler) -> None:
        """Start rebuild or reconcile in the background; add the keeper's jobs.

        Parameters
        ----------
        scheduler : BackgroundScheduler
            The appliance's scheduler, which its owner starts and stops.
        """
        self._last_check = self._read_last_check()
        scheduling.add_every(scheduler, "rebuild-requests", self.poll, POLL_SECONDS)
        scheduling.add_weekly(
            scheduler,
            "weekly-check",
            lambda: self.check(deep=WEEKLY_CHECK_DEEP, trigger="schedule"),
            day_of_week=WEEKLY_CHECK_DAY,
            hour=WEEKLY_CHECK_HOUR,
        )
        if self._recovery:
            self._start_thread(self.rebuild, self._recovery)
        else:
            self._start_thread(self._reconcile)

    def stop(self) -> None:
        """Stop background work (a rebuild is abandoned, a check cut short)."""
        self.cancel.set()
        for thread in self._threads:
            thread.join()
        self.poll()

    def unlock(self) -> None:
        """Give up the data folder; call last, once the writer has stopped."""
        self.lock.release()

    def rebuild(self, reason: str, request_id: str = "") -> None:
        """Rebuild the index now, on this thread; the outcome is in :attr:`status`."""
        with self._running("rebuilding"):
            if self.cancel.is_set():
                return
            rebuilder = Rebuilder(
                self.storage,
                self.files,
                self.writer,
                self.status,
                lambda: load_identity_decisions(self.app_db),
                self.cancel,
                rules=lambda: read_identity_rules(self.app_db),
            )
            rebuilder.run(reason, request_id)

    def check(self, deep: bool, trigger: str) -> CheckReport:
        """Run a check now, on this thread, and record it in ``app.db``."""
        with self._running("checking"):
            report = run_check(
                self.storage, self.files.index, deep=deep, cancel=self.cancel
            )
        self._last_check = record_report(self.app_db, report, trigger)
        level = logging.INFO if report.ok else logging.WARNING
        logger.log(level, "Integrity check (%s) %s", trigger, _verdict(report))
        return report

    def poll(self) -> None:
        """Take a rebuild request, and publish the rebuild status if it changed."""
        request = self.files.work_dir / REQUEST_NAME
        if request.exists() and not self.cancel.is_set():
            request_id = request.read_text(encoding="utf-8").strip()
            request.unlink(missing_ok=True)
            self._start_thread(
                self.rebuild, "requested by appliance rebuild-index", request_id
            )
        self._publish()

    def health(self) -> dict[str, Any]:
        """Return the index's state for the health probe: no patient data."""
        rebuild = self.status.snapshot()
        rebuild.pop("unreadable_sample")
        check = self._last_check
        return {
            "state": self._task,
            "recovered_from": self._recovery,
            "rebuild": rebuild,
            "reconcile": asdict(self._reconciled) if self._reconciled else None,
            "last_check": None if check is None else _check_summary(check),
        }

    def _recover_index(self) -> str:
        index_db = self.files.index
        reason = diagnose_index(index_db)
        if reason is None:
            return ""
        has_files = storage_has_files(self.storage)
        if reason != "it is missing" or Path(f"{index_db}-wal").exists():
            moved = move_aside(index_db)
            logger.error(
                "INDEX DAMAGED: %s %s; moved it aside to %s. Serving now; the "
                "index is rebuilt from storage in the background",
                index_db,
                reason,
                moved,
            )
        elif has_files:
            logger.error(
                "INDEX MISSING: %s is missing; serving now, and rebuilding it "
                "from storage in the background",
                index_db,
            )
        return f"index.db {reason}" if has_files else ""

    def _warn_if_state_lost(self) -> None:
        if self.app_db.exists() or not self.files.index.exists():
            return
        logger.error(
            "APP.DB MISSING: %s does not exist but %s does; a new, empty app.db "
            "is created, without modalities, users or identity decisions. If you "
            "have a backup, stop the appliance and restore app.db from it",
            self.app_db,
            self.files.index,
        )

    def _reconcile(self) -> None:
        with self._running("reconciling"):
            scratch = self.files.work_dir / "reconcile-queue.db"
            self.files.work_dir.mkdir(parents=True, exist_ok=True)
            self._reconciled = reconcile(
                self.storage, self.files.index, self.writer, scratch, self.cancel
            )

    def _start_thread(self, target: Callable[..., None], *args: str) -> None:
        # A task started while another runs waits for it (see _running).
        self._threads = [thread for thread in self._threads if thread.is_alive()]
        thread = threading.Thread(
            target=_logged(target), args=args, name="index-keeper", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    @contextmanager
    def _running(self, task: str) -> Iterator[None]:
        # One maintenance task at a time; the health shows which.
        with self._task_lock:
            self._task = task
            try:
                yield
            finally:
                self._task = "idle"

    def _publish(self) -> None:
        snapshot = self.status.snapshot()
        if snapshot == self._published:
            return
        self.files.work_dir.mkdir(parents=True, exist_ok=True)
        target = self.files.work_dir / STATUS_NAME
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(snapshot), encoding="utf-8")
        os.replace(temporary, target)
        self._published = snapshot

    def _read_last_check(self) -> CheckRecord | None:
        try:
            with closing(db.connect(self.app_db, readonly=True)) as conn:
                return latest_check(conn)
        except sqlite3.Error:
            logger.exception("Could not read the last check from app.db")
            return None


def record_report(app_db: Path, report: CheckReport, trigger: str) -> CheckRecord:
    """Keep a check's result in ``app.db`` and return it as recorded."""
    record = CheckRecord(
        started_at=report.started_at,
        finished_at=report.finished_at,
        trigger=trigger,
        deep=report.deep,
        ok=report.ok,
        counts={
            **report.counts,
            "files": report.files,
            "rows": report.rows,
            "redundant_copies": report.redundant_copies,
        },
        problems=report.problems,
        error=report.error,
    )
    with closing(open_state(app_db)) as conn:
        record_check(conn, record)
    return record


def _verdict(report: CheckReport) -> str:
    if report.error:
        return f"did not finish: {report.error}"
    problems = sum(report.counts.values())
    return (
        f"found {problems} problem(s) in {report.files} files and {report.rows} "
        "index rows" + (", content re-hashed" if report.deep else "")
    )


def _check_summary(check: CheckRecord) -> dict[str, Any]:
    return {
        "finished_at": check.finished_at,
        "trigger": check.trigger,
        "deep": check.deep,
        "ok": check.ok,
        "counts": dict(check.counts),
        "error": check.error,
    }


def _logged(target: Callable[..., None]) -> Callable[..., None]:
    def run(*args: str) -> None:
        try:
            target(*args)
        except Exception:
            logger.exception("Index maintenance task failed")

    return run
