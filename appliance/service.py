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

from appliance import db
from appliance.config import Settings
from appliance.dicom.listener import Listener, ListenerOptions
from appliance.index import IndexWriter
from appliance.state import Modality, list_modalities, open_state
from appliance.storage import Storage
from appliance.web import create_app

logger = logging.getLogger(__name__)


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
        self.storage = Storage(settings.data_dir)
        self.writer = IndexWriter(self.paths.index_db)
        self.listener = Listener(
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
        )
        self._web: Any = None
        self._web_thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Bring every part up, in dependency order."""
        self.storage.prepare()
        self.storage.sweep_incoming()
        prepare_state(self.paths)
        self.writer.start()
        self.listener.start()
        self._start_web()

    def stop(self) -> None:
        """Stop every part, letting stores in flight finish first."""
        logger.info("Stopping")
        if self._web is not None:
            self._web.close()
        self.listener.stop(grace_seconds=self.settings.shutdown_grace)
        self.writer.stop()
        logger.info("Stopped")

    def serve_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT, then stop cleanly."""

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            logger.info("Received %s", signal.Signals(signum).name)
            self._stopping.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.start()
        logger.info("Appliance ready")
        try:
            while not self._stopping.wait(timeout=1.0):
                pass
        finally:
            self.stop()

    def health(self) -> dict[str, Any]:
        """Liveness for ``/healthz``: no patient data."""
        return {"ok": not self._stopping.is_set(), "ae_title": self.settings.ae_title}

    def _start_web(self) -> None:
        app = create_app(self.health)
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

    def _serve_web(self) -> None:
        try:
            self._web.run()
        except OSError:
            # waitress raises when its socket is closed during stop.
            if not self._stopping.is_set():
                logger.exception("The web server stopped unexpectedly")
