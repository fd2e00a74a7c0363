"""sd_notify: READY, WATCHDOG and STOPPING datagrams to a real socket."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import notify
from tests.conftest import BIN, make_appliance
from tests.dicom_helpers import echo
from tests.staging import NotifySocket


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifySocket]:
    """A socket where systemd's would be."""
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


def test_sends_a_datagram_to_the_socket_path(listener: NotifySocket) -> None:
    sent = notify.notify("READY=1", environ={"NOTIFY_SOCKET": str(listener.path)})

    assert sent
    assert listener.wait_for("READY=1", timeout=2) == ["READY=1"]


def test_sends_to_an_abstract_socket() -> None:
    name = f"appliance-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)

        assert notify.notify("STOPPING=1", environ={"NOTIFY_SOCKET": f"@{name}"})
        assert sock.recv(100) == b"STOPPING=1"


@pytest.mark.parametrize("value", ["", "relative/name"])
def test_without_a_usable_socket_nothing_is_sent(value: str) -> None:
    assert not notify.notify("READY=1", environ={"NOTIFY_SOCKET": value})
    assert not notify.notify("READY=1", environ={})


def test_a_failed_send_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "nobody-listens"

    assert not notify.notify("READY=1", environ={"NOTIFY_SOCKET": str(missing)})
    assert "Could not notify the service manager" in caplog.text


def test_ready_carries_a_status_line(
    listener: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))

    notify.ready("DICOM on port 104")

    assert listener.wait_for("READY=1", timeout=2) == [
        "READY=1\nSTATUS=DICOM on port 104"
    ]


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "4000000"}, 2.0),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}, 2.0),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    environ: dict[str, str], interval: float | None
) -> None:
    assert notify.watchdog_interval(environ) == interval


def test_watchdog_pings_only_while_healthy(
    listener: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    healthy = threading.Event()
    healthy.set()
    watchdog = notify.Watchdog(healthy.is_set, interval=0.05)

    watchdog.start()
    try:
        listener.wait_for("WATCHDOG=1", timeout=2)
        healthy.clear()
        _drain(listener, seconds=0.2)
        silent = _drain(listener, seconds=0.3)
        healthy.set()
        listener.wait_for("WATCHDOG=1", timeout=2)
    finally:
        watchdog.stop()

    assert silent == []


def test_a_failing_health_check_withholds_pings(
    listener: NotifySocket,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))

    def broken() -> bool:
        raise RuntimeError("the writer is gone")

    watchdog = notify.Watchdog(broken, interval=0.05)
    watchdog.start()
    received = _drain(listener, seconds=0.3)
    watchdog.stop()

    assert received == []
    assert "The health check failed" in caplog.text


@pytest.mark.e2e
def test_the_serving_process_notifies_systemd(
    tmp_path: Path, listener: NotifySocket
) -> None:
    appliance = make_appliance(
        tmp_path / "data",
        {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "1000000"},
    )
    with appliance.log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(BIN / "appliance"), "serve"],
            env=appliance.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        # READY=1 comes once the listener answers, and not before.
        first = listener.wait_for("READY=1")
        assert echo(appliance.dicom_port, "PYNETDICOM") == 0x0000
        listener.wait_for("WATCHDOG=1", timeout=5)
        listener.wait_for("WATCHDOG=1", timeout=5)
    finally:
        process.terminate()
        code = process.wait(timeout=60)

    assert first[0].startswith("READY=1\nSTATUS=DICOM APPLIANCE on port ")
    assert code == 0, appliance.log()
    assert listener.wait_for("STOPPING=1", timeout=5)[-1] == "STOPPING=1"


def _drain(listener: NotifySocket, seconds: float) -> list[str]:
    # Whatever arrives within the next `seconds`.
    deadline = time.monotonic() + seconds
    found: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        listener.sock.settimeout(left)
        try:
            found.append(listener.sock.recv(4096).decode())
        except TimeoutError:
            break
    return found
