"""Debian's Orthanc over its REST API, for the search and viewer benchmarks.

Orthanc runs as a subprocess on loopback with a configuration of its own
(storage and index in a folder the caller chooses, no authentication, the
web viewer plug-in only when asked for), is ready once ``GET /system``
answers, and is stopped with SIGTERM, then SIGKILL, when its ``with`` block
ends, whatever happened inside.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _peers import LOOPBACK, ORTHANC, free_port

logger = logging.getLogger(__name__)

WEB_VIEWER_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancWebViewer.so")
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class OrthancHttp:
    """A running Orthanc: where its REST API listens, and its process id."""

    port: int
    pid: int

    @property
    def url(self) -> str:
        """The base URL of the REST API (and of the web viewer)."""
        return f"http://{LOOPBACK}:{self.port}"

    def connection(self) -> http.client.HTTPConnection:
        """Return a new keep-alive connection; one per thread."""
        return http.client.HTTPConnection(LOOPBACK, self.port, timeout=120)


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str = "application/json",
) -> Any:
    """Send one request on `conn`; return the decoded JSON answer.

    Raises
    ------
    RuntimeError
        If Orthanc answers anything but 200.
    """
    headers = {"Content-Type": content_type} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"Orthanc answered {response.status} to {method} {path}")
    return json.loads(data) if data else None


def find(conn: http.client.HTTPConnection, query: dict[str, Any]) -> Any:
    """Run ``POST /tools/find`` (Orthanc's C-FIND-like lookup)."""
    return request(conn, "POST", "/tools/find", json.dumps(query).encode())


def upload(conn: http.client.HTTPConnection, part10: bytes) -> str:
    """Store one DICOM Part 10 file; return Orthanc's instance id."""
    answer = request(conn, "POST", "/instances", part10, "application/dicom")
    return str(answer["ID"])


@contextmanager
def running(
    folder: Path, log_path: Path, *, web_viewer: bool = False
) -> Iterator[OrthancHttp]:
    """Run Orthanc with its storage and index in `folder`; yield it ready.

    Parameters
    ----------
    folder : pathlib.Path
        Holds the configuration, ``storage/`` and ``index/``; a second run on
        the same folder finds the first one's data.
    log_path : pathlib.Path
        Orthanc's output is appended here.
    web_viewer : bool
        Load Debian's ``orthanc-webviewer`` plug-in.

    Raises
    ------
    RuntimeError
        If Orthanc is missing, exits early, or does not answer in time.
    """
    if not ORTHANC.exists():
        raise RuntimeError(f"{ORTHANC} is missing (apt-get install orthanc)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = folder / "orthanc.json"
    config.write_text(json.dumps(_config(folder, port, web_viewer), indent=2))

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(ORTHANC), str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        peer = OrthancHttp(port, process.pid)
        _wait_until_ready(peer, process, log_path)
        yield peer
    finally:
        _stop(process)


def has_web_viewer() -> bool:
    """Return True where Debian's ``orthanc-webviewer`` is installed."""
    return WEB_VIEWER_PLUGIN.exists()


def _config(folder: Path, port: int, web_viewer: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "Name": "appliance-bench",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "StorageCompression": False,
        "Plugins": [str(WEB_VIEWER_PLUGIN)] if web_viewer else [],
        "DicomServerEnabled": False,
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SaveJobs": False,
    }
    if web_viewer:
        # The plug-in's cache of decoded frames lives with this run's data
        config["WebViewer"] = {"CachePath": str(folder / "webviewer-cache")}
    return config


def _wait_until_ready(
    peer: OrthancHttp, process: subprocess.Popen[bytes], log_path: Path
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"Orthanc exited with status {process.returncode}; see {log_path}"
            )
        try:
            request(peer.connection(), "GET", "/system")
            return
        except (OSError, RuntimeError):
            time.sleep(0.2)
    raise RuntimeError(f"Orthanc did not answer in {READY_TIMEOUT} s; see {log_path}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL, and reap whatever the session left behind."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.warning("Orthanc ignored SIGTERM for %s s", STOP_TIMEOUT)
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
