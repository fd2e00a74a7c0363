"""The real ``appliance serve`` process for end-to-end web tests.

Started on free loopback ports with its own data folder; files reach it over
DICOM (pynetdicom as the modality), users through the ``appliance user``
command, exactly as in an office.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pynetdicom import AE

BIN = Path(sys.executable).parent
SENDER = "PYNETDICOM"
_ONE_TIME = re.compile(r"one-time password\s+(\S+)")


def free_port() -> int:
    """Return a TCP port that was free a moment ago on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """A running appliance and how to reach it."""

    data_dir: Path
    env: dict[str, str]
    http_port: int
    dicom_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The web's base URL."""
        return f"http://127.0.0.1:{self.http_port}"

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run ``appliance ARGS`` on this data folder."""
        return subprocess.run(
            [str(BIN / "appliance"), *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def log(self) -> str:
        """What the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def one_time_password(self) -> str | None:
        """The first admin's password from the start-up banner, if printed."""
        match = _ONE_TIME.search(self.log())
        return match.group(1) if match else None

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until ``/healthz`` answers."""
        with self.log_path.open("ab") as handle:
            self.process = subprocess.Popen(
                [str(BIN / "appliance"), "serve"],
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"appliance exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"appliance not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> int:
        """SIGTERM and wait; return the exit status."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.process = None
        return code

    def send(self, paths: Sequence[Path]) -> list[int]:
        """C-STORE files as the registered modality; return the statuses."""
        datasets = [pydicom.dcmread(path) for path in paths]
        ae = AE(SENDER)
        for ds in datasets:
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", self.dicom_port, ae_title="APPLIANCE")
        assert assoc.is_established, "association refused"
        try:
            return [int(assoc.send_c_store(ds).Status) for ds in datasets]
        finally:
            assoc.release()


def prepare(data_dir: Path) -> Served:
    """Make (not start) an appliance with the test modality registered."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(data_dir),
        "APPLIANCE_DICOM_PORT": str(free_port()),
        "APPLIANCE_HTTP_PORT": str(free_port()),
        "APPLIANCE_DICOM_HOST": "127.0.0.1",
        "APPLIANCE_AE_TITLE": "APPLIANCE",
        "APPLIANCE_SHUTDOWN_GRACE": "5",
    }
    env.pop("APPLIANCE_CONFIG", None)
    served = Served(
        data_dir=data_dir,
        env=env,
        http_port=int(env["APPLIANCE_HTTP_PORT"]),
        dicom_port=int(env["APPLIANCE_DICOM_PORT"]),
        log_path=data_dir.parent / f"{data_dir.name}.log",
    )
    result = served.cli("modality", "add", SENDER)
    assert result.returncode == 0, result.stderr
    return served
