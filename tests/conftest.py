"""Shared fixtures: the real appliance process, and real vendor files.

End-to-end tests start ``appliance serve`` as a subprocess on free loopback
ports with its own data folder, and talk to it with real DICOM clients.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file

# Fixtures shared by tests that serve the appliance in their own process.
pytest_plugins = ["tests.in_process"]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SENDERS = ("STORESCU", "PYNETDICOM")

# Real vendor ultrasound files of the pydicom-data package (see FIELD-NOTES).
ULTRASOUND_FILES = {
    "ge_rgb": "US1_UNCR.dcm",
    "ge_j2k": "US1_J2KR.dcm",
    "aloka_palette": "gdcm-US-ALOKA-16.dcm",
    "philips_palette": "OBXXXX1A.dcm",
    "sonosite_cine": "color3d_jpeg_baseline.dcm",
}


def free_port() -> int:
    """Return a TCP port that was free a moment ago on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample_file(name: str) -> Path:
    """Return the path of a pydicom test file (from pydicom or pydicom-data)."""
    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(name)
    return Path(path)


def every_sample_file() -> list[Path]:
    """Every DICOM file pydicom and the pydicom-data package ship.

    Globbed from the installed folders: pydicom's ``get_testdata_files()``
    may try to download files it lacks, and test machines have no network.
    """
    folders = {sample_file("CT_small.dcm").parent, sample_file("US1_UNCR.dcm").parent}
    return sorted(path for folder in folders for path in folder.glob("*.dcm"))


@pytest.fixture(scope="session")
def ultrasound_files() -> dict[str, Path]:
    """The real vendor ultrasound files, by a short name."""
    return {key: sample_file(name) for key, name in ULTRASOUND_FILES.items()}


@dataclass
class RunningAppliance:
    """An ``appliance serve`` subprocess and what a test needs to reach it."""

    data_dir: Path
    dicom_port: int
    http_port: int
    env: dict[str, str]
    log_path: Path
    ae_title: str = "APPLIANCE"
    start_options: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def log(self) -> str:
        """Everything the process wrote to stderr and stdout so far."""
        return self.log_path.read_text(errors="replace")

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until it answers C-ECHO."""
        handle = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(BIN / "appliance"), "serve"],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir.parent,
            **self.start_options,
        )
        handle.close()
        self._wait_ready(timeout)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; return the exit status."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL, as a power cut would, and reap the process."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=30)
        self.process = None

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """Run ``appliance ARGS`` against this data folder."""
        return subprocess.run(
            [str(BIN / "appliance"), *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def index(self) -> sqlite3.Connection:
        """A read-only connection to the live index."""
        conn = sqlite3.connect(f"file:{self.data_dir / 'index.db'}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        return conn

    def stored_files(self) -> list[Path]:
        """Every file under storage/."""
        return sorted(p for p in (self.data_dir / "storage").rglob("*") if p.is_file())

    def _wait_ready(self, timeout: float) -> None:
        from tests.dicom_helpers import echo

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"appliance exited early:\n{self.log()}")
            if echo(self.dicom_port, "PYNETDICOM", self.ae_title) == 0x0000:
                return
            time.sleep(0.2)
        raise RuntimeError(f"appliance not ready after {timeout}s:\n{self.log()}")


def make_appliance(
    data_dir: Path, extra_env: Mapping[str, str] | None = None
) -> RunningAppliance:
    """Prepare (not start) an appliance on free ports with senders registered."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(data_dir),
        "APPLIANCE_DICOM_PORT": str(free_port()),
        "APPLIANCE_HTTP_PORT": str(free_port()),
        "APPLIANCE_AE_TITLE": "APPLIANCE",
        "APPLIANCE_DICOM_HOST": "127.0.0.1",
        "APPLIANCE_SHUTDOWN_GRACE": "10",
        **(extra_env or {}),
    }
    env.pop("APPLIANCE_CONFIG", None)
    appliance = RunningAppliance(
        data_dir=data_dir,
        dicom_port=int(env["APPLIANCE_DICOM_PORT"]),
        http_port=int(env["APPLIANCE_HTTP_PORT"]),
        env=env,
        log_path=data_dir.parent / f"{data_dir.name}.log",
    )
    for sender in SENDERS:
        result = appliance.cli("modality", "add", sender)
        assert result.returncode == 0, result.stderr
    return appliance


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[RunningAppliance]:
    """A started appliance with STORESCU and PYNETDICOM registered."""
    running = make_appliance(tmp_path / "data")
    running.start()
    yield running
    if running.process is not None:
        running.stop()


@pytest.fixture(scope="session")
def dcmtk() -> None:
    """Skip nothing: DCMTK is installed by installer/dev-setup.sh --test."""
    missing = [tool for tool in ("storescu", "echoscu") if not shutil.which(tool)]
    assert not missing, f"DCMTK missing ({missing}); run installer/dev-setup.sh --test"
