"""Waking pynetdicom's network thread on data: the wait, and that we use it."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from pynetdicom.dul import DULServiceProvider

from appliance.dicom import dul_wait
from appliance.service import Appliance
from tests.conftest import sample_file
from tests.dicom_helpers import renamed_copy, send_datasets

SUCCESS = 0x0000
LONG_WAIT = 60.0


def test_a_wait_ends_when_bytes_arrive() -> None:
    reader, writer = socket.socketpair()
    with reader, writer:
        sender = threading.Timer(0.05, writer.sendall, args=(b"PDU",))
        sender.start()
        started = time.monotonic()
        waited = dul_wait.wait_for_data(reader, LONG_WAIT)
        elapsed = time.monotonic() - started
        sender.join()

        assert waited
        assert elapsed < LONG_WAIT / 2, "the wait ran to its time-out"
        assert reader.recv(16) == b"PDU"


def test_a_closed_socket_cannot_be_waited_on() -> None:
    reader, writer = socket.socketpair()
    writer.close()
    reader.close()

    assert not dul_wait.wait_for_data(reader, LONG_WAIT)


def test_unmarked_threads_sleep_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(sock: socket.socket, seconds: float) -> bool:
        raise AssertionError("an unmarked thread waited on a socket")

    monkeypatch.setattr(dul_wait, "wait_for_data", refuse)

    dul_wait._WakingClock().sleep(0.001)


def test_the_listener_network_threads_wait_on_their_sockets(
    in_process_appliance: Appliance, monkeypatch: pytest.MonkeyPatch
) -> None:
    # If a pynetdicom upgrade stopped sleeping through dul.time, the listener
    # would still work, only slower: this notices.
    waiters: list[threading.Thread] = []
    original = dul_wait.wait_for_data

    def recorded(sock: socket.socket, seconds: float) -> bool:
        waiters.append(threading.current_thread())
        return original(sock, seconds)

    monkeypatch.setattr(dul_wait, "wait_for_data", recorded)
    image = renamed_copy(sample_file("US1_UNCR.dcm"), patient_id="WAKE1")

    statuses = send_datasets(in_process_appliance.settings.dicom_port, [image])

    assert statuses == [SUCCESS]
    assert waiters, "the network thread never waited on its socket"
    assert all(isinstance(thread, DULServiceProvider) for thread in waiters)
