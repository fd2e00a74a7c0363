"""Helpers for the install tests: the installer in a staging folder, the
staged appliance as a process, systemd's notify socket, and a real nginx.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALLER = REPO / "installer" / "install.sh"
_ONE_TIME = re.compile(r"one-time password: (\S+)")


def run_installer(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``install.sh --root ROOT ARGS`` with no terminal; return it."""
    return subprocess.run(
        ["bash", str(INSTALLER), "--root", str(root), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def one_time_password(output: str) -> str | None:
    """The first admin's password as the installer printed it."""
    match = _ONE_TIME.search(output)
    return match.group(1) if match else None


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """Wait until something accepts TCP connections on loopback `port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[str] = []

    def wait_for(self, message: str, timeout: float = 30.0) -> list[str]:
        """Read datagrams until one starts with `message`; return all so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.received.append(data)
            if data.startswith(message):
                return self.received
        raise TimeoutError(f"no {message!r} after {timeout}s: {self.received}")

    def close(self) -> None:
        """Close and remove the socket."""
        self.sock.close()
        self.path.unlink(missing_ok=True)


@dataclass
class StagedServe:
    """The staged ``appliance serve``, run directly (there is no systemd)."""

    program: Path
    config: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it as the unit would: the staged program and config."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.program / "bin" / "appliance"),
                    "--config",
                    str(self.config),
                    "serve",
                ],
                env={"PATH": "/usr/bin:/bin", **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> int:
        """SIGTERM, as systemctl stop does; return the exit status."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.process = None
        return code

    def log(self) -> str:
        """What it printed so far."""
        return self.log_path.read_text(errors="replace")


class NginxFront:
    """Debian's nginx serving the staged site, under a test main config."""

    def __init__(self, workdir: Path, sites: Sequence[Path]) -> None:
        self.workdir = workdir
        self.sites = sites
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ports: Sequence[int]) -> None:
        """Start in the foreground and wait until every port listens."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        conf.write_text(self._main_config())
        error_log = self.workdir / "error.log"
        self.process = subprocess.Popen(
            ["nginx", "-p", str(self.workdir), "-c", str(conf), "-e", str(error_log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            for port in ports:
                wait_for_port(port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"nginx did not start:\n{self.error_log()}") from None

    def stop(self) -> None:
        """Stop nginx (SIGQUIT: a graceful stop) and wait."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def error_log(self) -> str:
        """nginx's error log."""
        path = self.workdir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _main_config(self) -> str:
        work = self.workdir
        includes = "\n".join(f"    include {site};" for site in self.sites)
        return (
            "daemon off;\n"
            f"pid {work}/nginx.pid;\n"
            f"error_log {work}/error.log;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            f"    access_log {work}/access.log;\n"
            f"    client_body_temp_path {work}/body;\n"
            f"    proxy_temp_path {work}/proxy;\n"
            f"    fastcgi_temp_path {work}/fastcgi;\n"
            f"    uwsgi_temp_path {work}/uwsgi;\n"
            f"    scgi_temp_path {work}/scgi;\n"
            f"{includes}\n"
            "}\n"
        )


def service_user_exists() -> bool:
    """True when the machine has the ``appliance`` user (a real install)."""
    try:
        pwd.getpwnam("appliance")
    except KeyError:
        return False
    return True


def owner_of(path: Path) -> str:
    """``user:group`` of a path, not following a symlink."""
    stats = os.lstat(path)
    return f"{pwd.getpwuid(stats.st_uid).pw_name}:{grp.getgrgid(stats.st_gid).gr_name}"
