"""The serving process: wires storage, index, state, listener and web together.

Start order matters: torn receives are swept before the listener opens, the
index writer runs before the first C-STORE can arrive, and the web comes
last. Stop runs the other way round, and lets stores in flight finish.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from waitress.server import create_server

from appliance import db, diskspace, notify, scheduling
from appliance.auth.login import login_policy
from appliance.config import Settings
from appliance.dicom.commitment import RETRY_EVERY as COMMITMENT_RETRY_EVERY
from appliance.dicom.listener import Listener, ListenerOptions
from appliance.dicom.services import DicomServices, ServiceOptions
from appliance.index import IndexWriter
from appliance.index.identity_actions import IdentityActions
from appliance.maintenance import IndexKeeper
from appliance.restoring import RestoreWizard
from appliance.state import Modality, list_modalities, open_state
from appliance.state.audit import record_outside_web
from appliance.state.identity import IdentityRulesSource
from appliance.state.users import create_first_admin
from appliance.storage import Storage
from appliance.web import WebOptions, create_app
from backup.errors import RestoreRefusedError
from backup.files import remove_tree
from backup.job import BackupJob
from backup.restore import swap
from backup.retention import Retention

logger = logging.getLogger(__name__)

WRITER_PROBE_SECONDS = 10
DAY_SECONDS = 24 * 3600


@dataclass(frozen=True)
class DataPaths:
    """Where one data folder keeps its parts."""

    root: Path

    @property
    def index_db(self) -> Path:
        """The derived, rebuildable index."""
        return self.root / "index.db"

    @property
    def app_db(self) -> Path:
        """The state that cannot be derived: back it up."""
        return self.root / "app.db"


def prepare_state(paths: DataPaths) -> None:
    """Create or migrate ``app.db`` (refusing a newer one)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with closing(open_state(paths.app_db)):
        pass


def announce_first_admin(paths: DataPaths) -> None:
    """Create the ``admin`` account if there is none; print its password once.

    The one-time password goes to standard output (the journal under
    systemd) and must be changed at the first login. It is no patient data.
    """
    with closing(open_state(paths.app_db)) as conn:
        password = create_first_admin(conn)
    if password is None:
        return
    banner = "=" * 64
    print(
        f"{banner}\nNo user existed: created user 'admin' with the one-time"
        f" password\n\n    {password}\n\nLog in at the web page and choose a"
        f" new password.\n{banner}",
        flush=True,
    )
    logger.warning("Created the first admin account; its password is printed above")


def registered_modalities(paths: DataPaths) -> list[Modality]:
    """Read the registered modalities on a short-lived read-only connection."""
    with closing(db.connect(paths.app_db, readonly=True)) as conn:
        return list_modalities(conn)


class Appliance:
    """One running appliance: listener, index writer and web server.

    Parameters
    ----------
    settings : Settings
        Validated settings.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.paths = DataPaths(settings.data_dir)
        self.login_policy = login_policy(settings)
        self.storage = Storage(settings.data_dir)
        self.backups = BackupJob(
            settings.data_dir,
            settings.backup_dir,
            Retention(settings.keep_daily, settings.keep_weekly, settings.keep_monthly),
            settings.backup_time,
        )
        self.restore = RestoreWizard(
            settings.data_dir, settings.backup_dir, self.switch_data
        )
        self._build_parts()
        self._web: Any = None
        self._web_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # Held while the data folder is switched, so that stop waits for it.
        self._switch_lock = threading.Lock()

    def start(self) -> None:
        """Bring every part up, in dependency order."""
        self._start_parts()
        self._start_web()
        self._start_jobs()

    def stop(self) -> None:
        """Stop every part, letting stores in flight finish first."""
        logger.info("Stopping")
        self._stopping.set()
        if self._web is not None:
            self._web.close()
        with self._switch_lock:
            self._stop_parts()
        self.backups.stop()
        logger.info("Stopped")

    def switch_data(self, staged: Path) -> Path | None:
        """Serve from a restored copy of the data folder, keeping the old one.

        The listener and the index stop (stores in flight finish first), the
        staged folder takes the data folder's place and they start again on
        it. The web stays up and answers "restoring" meanwhile. If the swap
        fails, they start again on the data they had and the error is
        raised.

        Parameters
        ----------
        staged : pathlib.Path
            A complete copy of a snapshot beside the data folder
            (:func:`backup.restore.stage`).

        Returns
        -------
        pathlib.Path or None
            Where the replaced data folder was moved, never deleted.
        """
        with self._switch_lock:
            if self._stopping.is_set():
                remove_tree(staged)
                raise RestoreRefusedError("the appliance is stopping; restore again")
            logger.info("Switching the data folder to a restored copy")
            self._stop_parts()
            try:
                moved = swap(staged, self.settings.data_dir)
            except BaseException:
                logger.exception("The switch failed; serving the previous data")
                remove_tree(staged)
                self._build_parts()
                self._start_parts()
                self._start_jobs()
                raise
            self._build_parts()
            self._start_parts()
            self._start_jobs()

        record_outside_web(
            self.paths.app_db,
            "restore",
            f"restored from a backup; the replaced data is kept in {moved or '-'}",
            by_system=True,
        )
        logger.info("Serving from the restored data; the replaced data is in %s", moved)
        return moved

    def _build_parts(self) -> None:
        # What holds the data folder open; made anew after a restore's switch.
        self.identity_rules = IdentityRulesSource(self.paths.app_db)
        self.writer = IndexWriter(self.paths.index_db, identity=self.identity_rules)
        self.identity_actions = IdentityActions(
            self.writer, self.storage, self.identity_rules
        )
        self.scheduler = scheduling.create_scheduler()
        self.keeper = IndexKeeper(
            self.settings.data_dir,
            self.paths.index_db,
            self.paths.app_db,
            self.storage,
            self.writer,
        )
        self.services = self._build_services()
        self.listener = self._build_listener()

    def _build_listener(self) -> Listener:
        settings = self.settings
        return Listener(
            ListenerOptions(
                ae_title=settings.ae_title,
                host=settings.dicom_host,
                port=settings.dicom_port,
                max_associations=settings.max_associations,
                network_timeout=settings.network_timeout,
            ),
            self.storage,
            self.writer,
            lambda: registered_modalities(self.paths),
            self.services,
        )

    def _build_services(self) -> DicomServices:
        settings = self.settings
        return DicomServices(
            ServiceOptions(
                ae_title=settings.ae_title,
                index_db=self.paths.index_db,
                app_db=self.paths.app_db,
                worklist_stale_days=settings.worklist_stale_days,
                network_timeout=settings.network_timeout,
            ),
            self.storage,
            lambda: registered_modalities(self.paths),
        )

    def _start_parts(self) -> None:
        # Torn receives are swept before the listener opens, the index
        # writer runs before the first C-STORE can arrive.
        self.storage.prepare()
        self.keeper.prepare()
        self.storage.sweep_incoming()
        prepare_state(self.paths)
        announce_first_admin(self.paths)
        self.writer.start()
        self.listener.start()

    def _start_jobs(self) -> None:
        self.keeper.start(self.scheduler)
        self._schedule_disk_warning()
        self._schedule_commitment_retries()
        self._schedule_backups()
        self.scheduler.start()

    def _stop_parts(self) -> None:
        self.listener.stop(grace_seconds=self.settings.shutdown_grace)
        self.keeper.stop()
        scheduling.shutdown(self.scheduler)
        self.writer.stop()
        self.identity_rules.close()
        self.keeper.unlock()

    def serve_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT, then stop cleanly."""

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            logger.info("Received %s", signal.Signals(signum).name)
            self._stopping.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.start()
        logger.info("Appliance ready")
        notify.ready(
            f"DICOM {self.settings.ae_title} on port {self.settings.dicom_port},"
            f" web on {self.settings.http_host}:{self.settings.http_port}"
        )
        watchdog = self._start_watchdog()
        try:
            while not self._stopping.wait(timeout=1.0):
                pass
        finally:
            notify.stopping()
            if watchdog is not None:
                watchdog.stop()
            self.stop()

    def _start_watchdog(self) -> notify.Watchdog | None:
        # Only when systemd asks for pings (WatchdogSec= in the unit).
        interval = notify.watchdog_interval()
        if interval is None:
            return None
        watchdog = notify.Watchdog(self._healthy, interval)
        watchdog.start()
        return watchdog

    def _healthy(self) -> bool:
        """Tell the watchdog whether the listener and the index writer work.

        The writer is asked to run a trivial job: a writer thread that died
        or hangs does not answer in time.
        """
        try:
            _host, _port = self.listener.address
        except RuntimeError:
            logger.error("Health: the DICOM listener is not running")
            return False
        try:
            probe = self.writer.submit(lambda conn: conn.execute("SELECT 1"))
            probe.result(timeout=WRITER_PROBE_SECONDS)
        except Exception as exc:
            logger.error("Health: the index writer does not answer (%r)", exc)
            return False
        return True

    def _schedule_disk_warning(self) -> None:
        # Once right after start, then once a day; 0 turns the warning off.
        warn_days = self.settings.disk_warn_days
        if not warn_days:
            return

        def warn() -> None:
            diskspace.warn_if_low(self.settings.data_dir, warn_days)

        self.scheduler.add_job(warn, id="disk-space-at-start", name="disk-space")
        scheduling.add_every(self.scheduler, "disk-space", warn, DAY_SECONDS)

    def _schedule_commitment_retries(self) -> None:
        # Right after start (reports owed from before a restart), then often.
        retry = self.services.commitment.retry_owed
        self.scheduler.add_job(
            retry,
            id="commitment-reports-at-start",
            name="commitment-reports",
            kwargs={"at_start": True},
        )
        scheduling.add_every(
            self.scheduler,
            "commitment-reports",
            retry,
            COMMITMENT_RETRY_EVERY.total_seconds(),
        )

    def _schedule_backups(self) -> None:
        # Nightly at backup_time; without a backup folder, say so at start.
        if self.settings.backup_dir is None:
            logger.warning("Backups are off: backup_dir is not set")
            return
        hour, minute = (int(part) for part in self.settings.backup_time.split(":"))
        scheduling.add_daily(
            self.scheduler, "nightly-backup", self._backup, hour=hour, minute=minute
        )
        logger.info(
            "Nightly backup at %s into %s",
            self.settings.backup_time,
            self.settings.backup_dir,
        )

    def _backup(self) -> None:
        # The nightly run, recorded in the audit trail as the service's.
        result = self.backups.run()
        if result is None or result.busy:
            return
        outcome = "complete" if result.ok else f"failed: {result.error}"
        record_outside_web(
            self.paths.app_db,
            "backup",
            f"{result.trigger} backup {result.snapshot or '-'} {outcome}"[:500],
            by_system=True,
        )

    def health(self) -> dict[str, Any]:
        """Liveness for ``/healthz``: no patient data.

        ``index`` tells whether the index is being rebuilt (with progress),
        reconciled or checked, and the last check's result.
        """
        return {
            "ok": not self._stopping.is_set(),
            "ae_title": self.settings.ae_title,
            "index": self.keeper.health(),
        }

    def _start_web(self) -> None:
        app = create_app(
            self.health,
            self._web_options(),
            identity_actions=lambda: self.identity_actions,
            backups=self.backups,
            restore=self.restore,
        )
        self._web = create_server(
            app,
            host=self.settings.http_host,
            port=self.settings.http_port,
            threads=8,
        )
        self._web_thread = threading.Thread(
            target=self._serve_web, name="web", daemon=True
        )
        self._web_thread.start()
        logger.info(
            "Web server on http://%s:%d",
            self.settings.http_host,
            self.settings.http_port,
        )

    def _web_options(self) -> WebOptions:
        return WebOptions(
            index_db=self.paths.index_db,
            app_db=self.paths.app_db,
            storage=self.storage,
            cache_dir=self.paths.root / "cache",
            secret_file=self.paths.root / "web-secret.key",
            secure_cookies=self.settings.secure_cookies,
            idle_minutes=self.settings.session_idle_minutes,
            absolute_minutes=self.settings.session_absolute_hours * 60,
            trusted_proxies=self.settings.trusted_proxies,
            login=self.login_policy,
        )

    def _serve_web(self) -> None:
        try:
            self._web.run()
        except OSError:
            # waitress raises when its socket is closed during stop.
            if not self._stopping.is_set():
                logger.exception("The web server stopped unexpectedly")
