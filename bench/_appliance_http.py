"""The real ``appliance serve`` for the benchmarks that go through its web.

Started on free loopback ports with a data folder the caller may have filled
(an index written beforehand, say), with one clinician account and the
``STORESCU`` modality registered; ready once ``/healthz`` says that the
index's start-up task (reconcile, or a rebuild) is over, so that no timing
shares the machine with it. Stopped with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from _peers import LOOPBACK, SENDER_AE, free_port

REPO = Path(__file__).resolve().parent.parent
USER = "reader"
PASSWORD = "a long timing passphrase 42"
READY_TIMEOUT = 300.0
STOP_TIMEOUT = 30.0
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@dataclass(frozen=True)
class ServedAppliance:
    """A running appliance: its web, its DICOM port and its process."""

    http_port: int
    dicom_port: int
    pid: int
    data_dir: Path

    @property
    def url(self) -> str:
        """The web's base URL."""
        return f"http://{LOOPBACK}:{self.http_port}"


def default_command() -> list[str]:
    """Return the ``appliance`` script beside this Python, else in ``.venv``."""
    for candidate in (
        Path(sys.executable).parent / "appliance",
        REPO / ".venv" / "bin" / "appliance",
    ):
        if candidate.exists():
            return [str(candidate)]
    return [sys.executable, "-m", "appliance"]


@contextmanager
def serving(
    command: list[str], data_dir: Path, log_path: Path, log_level: str = "WARNING"
) -> Iterator[ServedAppliance]:
    """Prepare `data_dir`, run ``serve`` on it, and yield it once settled.

    Raises
    ------
    RuntimeError
        If a set-up command fails, or the service exits or never settles.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    env = {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(data_dir),
        "APPLIANCE_DICOM_HOST": LOOPBACK,
        "APPLIANCE_DICOM_PORT": str(dicom_port),
        "APPLIANCE_HTTP_HOST": LOOPBACK,
        "APPLIANCE_HTTP_PORT": str(http_port),
        "APPLIANCE_AE_TITLE": "APPLIANCE",
        "APPLIANCE_LOG_LEVEL": log_level,
    }
    env.pop("APPLIANCE_CONFIG", None)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _setup(command + ["modality", "add", SENDER_AE, "--exist-ok"], env, log_path)
    _setup(
        command + ["user", "add", USER, "--role", "clinician"],
        env,
        log_path,
        stdin=PASSWORD + "\n",
    )

    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command + ["serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        served = ServedAppliance(http_port, dicom_port, process.pid, data_dir)
        _wait_until_settled(served, process, log_path)
        yield served
    finally:
        _stop(process)


def logged_in_opener(served: ServedAppliance) -> urllib.request.OpenerDirector:
    """Return a cookie-keeping client logged in through the form."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    with opener.open(f"{served.url}/login", timeout=30) as response:
        page = response.read().decode()
    match = _CSRF.search(page)
    if match is None:
        raise RuntimeError("the login page has no CSRF token")
    body = urllib.parse.urlencode(
        {"name": USER, "password": PASSWORD, "csrf_token": match.group(1)}
    ).encode()
    with opener.open(f"{served.url}/login", body, timeout=30) as response:
        if "/login" in response.url:
            raise RuntimeError("the benchmark's login was refused")
    return opener


def _setup(
    argv: list[str], env: dict[str, str], log_path: Path, stdin: str = ""
) -> None:
    with log_path.open("ab") as log:
        result = subprocess.run(
            argv,
            env=env,
            input=stdin.encode(),
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-4:])} failed; see {log_path}")


def _wait_until_settled(
    served: ServedAppliance, process: subprocess.Popen[bytes], log_path: Path
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"appliance exited with status {process.returncode}; see {log_path}"
            )
        try:
            with urllib.request.urlopen(f"{served.url}/healthz", timeout=5) as reply:
                health = json.load(reply)
        except (OSError, ValueError):
            health = {}
        if health.get("index", {}).get("state") == "idle":
            return
        time.sleep(0.5)
    raise RuntimeError(f"the appliance did not settle in {READY_TIMEOUT} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
