"""Start and stop the receivers the ingest benchmark pushes to.

Each receiver runs as a subprocess on loopback with its own data folder and
its own log file, is ready once it answers a C-ECHO from DCMTK's ``echoscu``
(PS3.7 9.1.5), and is stopped with SIGTERM, then SIGKILL, when its ``with``
block ends, whatever happened inside.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
SENDER_AE = "STORESCU"
ECHOSCU = "/usr/bin/echoscu"
ORTHANC = Path("/usr/sbin/Orthanc")
BASELINE_SCRIPT = Path(__file__).with_name("baseline_receiver.py")

READY_TIMEOUT = 60.0
SETUP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Peer:
    """A receiver: what a sender needs, and what to watch (pid 0 until run)."""

    name: str
    ae_title: str
    port: int
    pid: int
    data_dir: Path


PeerStarter = Callable[[Path, Path], AbstractContextManager[Peer]]
"""Starts a receiver with data in a run folder, logging to a file."""


def free_port() -> int:
    """Return a TCP port on loopback that nothing listens on just now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@contextmanager
def baseline(run_dir: Path, log_path: Path) -> Iterator[Peer]:
    """Run ``baseline_receiver.py`` with this interpreter; yield it ready."""
    port = free_port()
    out_dir = run_dir / "received"
    argv = [sys.executable, str(BASELINE_SCRIPT), "--port", str(port)]
    argv += ["--out-dir", str(out_dir), "--ae-title", "BASELINE"]

    peer = Peer("baseline", "BASELINE", port, 0, out_dir)
    with _running(peer, argv, dict(os.environ), log_path) as running:
        yield running


def appliance(command: list[str]) -> PeerStarter:
    """Return a starter for ``<command> serve`` with a fresh data folder.

    Parameters
    ----------
    command : list of str
        How to call the appliance's command line, such as
        ``[".venv/bin/appliance"]``.

    Returns
    -------
    PeerStarter
        Registers ``STORESCU`` as a modality, then serves until stopped.
    """

    @contextmanager
    def start(run_dir: Path, log_path: Path) -> Iterator[Peer]:
        peer = Peer("appliance", "APPLIANCE", free_port(), 0, run_dir / "data")
        env = _appliance_env(peer, free_port())

        # The appliance only takes storage from modalities it knows
        _run_setup(command + ["modality", "add", SENDER_AE], env, log_path)
        with _running(peer, command + ["serve"], env, log_path) as running:
            yield running

    return start


@contextmanager
def orthanc(run_dir: Path, log_path: Path) -> Iterator[Peer]:
    """Run Debian's Orthanc with a config of its own; yield it ready.

    Debian's DCMTK leaves Nagle's algorithm on unless ``TCP_NODELAY=1`` is in
    the environment; as shipped, Orthanc then stalls about 40 ms on every
    instance. The benchmark compares against Orthanc at its best: it sets
    that variable and Orthanc's largest PDU (128 KiB instead of 16 KiB).
    """
    peer = Peer("orthanc", "ORTHANC", free_port(), 0, run_dir / "storage")
    config = run_dir / "orthanc.json"
    config.write_text(json.dumps(_orthanc_config(peer, run_dir), indent=2))

    argv = [str(ORTHANC), str(config)]
    env = {**os.environ, "TCP_NODELAY": "1"}
    with _running(peer, argv, env, log_path) as running:
        yield running


def orthanc_version() -> str | None:
    """Return Orthanc's version, or None where it is not installed."""
    if not ORTHANC.exists():
        return None

    try:
        result = subprocess.run(
            [str(ORTHANC), "--version"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    first = result.stdout.splitlines()[:1]
    return first[0].rsplit(" ", 1)[-1] if first else "unknown"


@contextmanager
def _running(
    peer: Peer, argv: list[str], env: dict[str, str], log_path: Path
) -> Iterator[Peer]:
    """Start `argv` as `peer`; yield it once ready; always stop it."""
    peer.data_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            running = replace(peer, pid=process.pid)
            _wait_until_ready(running, process, log_path)
            yield running
        finally:
            _stop(process, peer.name)


def _wait_until_ready(
    peer: Peer, process: subprocess.Popen[bytes], log_path: Path
) -> None:
    """Return once `peer` answers C-ECHO; raise if it exits or stays silent."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{peer.name} exited with status {process.returncode} before "
                f"answering C-ECHO; see {log_path}"
            )
        if _echo(peer):
            logger.debug("%s answers C-ECHO on port %d", peer.name, peer.port)
            return
        time.sleep(0.2)

    raise TimeoutError(f"{peer.name} did not answer C-ECHO in {READY_TIMEOUT} s")


def _echo(peer: Peer) -> bool:
    """Return True if `peer` answers a C-ECHO from ``echoscu``."""
    argv = [ECHOSCU, "-aet", SENDER_AE, "-aec", peer.ae_title, "-to", "5"]
    argv += [LOOPBACK, str(peer.port)]
    try:
        result = subprocess.run(argv, capture_output=True, timeout=15)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _stop(process: subprocess.Popen[bytes], name: str) -> None:
    """Stop `process` with SIGTERM, then SIGKILL, and reap its session."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.warning("%s ignored SIGTERM for %s s", name, STOP_TIMEOUT)
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    # Children it left behind are in the session started for it
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _run_setup(argv: list[str], env: dict[str, str], log_path: Path) -> None:
    """Run one set-up command, its output into the log; raise if it fails."""
    with log_path.open("ab") as log:
        result = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=SETUP_TIMEOUT,
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited with status {result.returncode}; see {log_path}"
        )


def _appliance_env(peer: Peer, http_port: int) -> dict[str, str]:
    """Return this process's environment plus the appliance's settings."""
    return {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(peer.data_dir),
        "APPLIANCE_DICOM_HOST": LOOPBACK,
        "APPLIANCE_DICOM_PORT": str(peer.port),
        "APPLIANCE_HTTP_HOST": LOOPBACK,
        "APPLIANCE_HTTP_PORT": str(http_port),
        "APPLIANCE_AE_TITLE": peer.ae_title,
    }


def _orthanc_config(peer: Peer, run_dir: Path) -> dict[str, object]:
    """Return an Orthanc configuration that stores anything from anyone."""
    return {
        "Name": "ingest-bench",
        "StorageDirectory": str(peer.data_dir),
        "IndexDirectory": str(run_dir / "index"),
        "StorageCompression": False,
        "Plugins": [],
        "DicomServerEnabled": True,
        "DicomAet": peer.ae_title,
        "DicomPort": peer.port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "MaximumPduLength": 131072,
        "HttpPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SaveJobs": False,
    }
