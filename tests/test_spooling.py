"""Received spools: the fsync started on arrival, and its fallback."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from appliance.dicom.spooling import Received
from appliance.service import Appliance
from appliance.storage import SpoolFile, Storage
from tests.conftest import sample_file
from tests.dicom_helpers import renamed_copy, send_datasets

SUCCESS = 0x0000


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    """An empty data folder's storage."""
    storage = Storage(tmp_path / "data")
    storage.prepare()
    return storage


def _written_spool(storage: Storage, data: bytes) -> SpoolFile:
    spool = storage.new_spool()
    spool.write(data)
    return spool


def test_without_a_started_fsync_the_handler_makes_it_durable(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    original = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), original(fd)))
    received = Received(
        _written_spool(storage, b"DICM" * 100), threading.current_thread()
    )

    received.make_durable()

    assert received.spool.error is None
    assert len(synced) == 1
    assert received.spool.path.read_bytes() == b"DICM" * 100
    received.discard()
    assert not received.spool.path.exists()


def test_discard_waits_for_a_running_fsync(storage: Storage) -> None:
    spool = _written_spool(storage, b"x" * 4096)
    release = threading.Event()

    def slow_finish() -> None:
        release.wait(timeout=30)
        spool.finish()

    with ThreadPoolExecutor(max_workers=1) as pool:
        syncing = pool.submit(slow_finish)
        received = Received(spool, threading.current_thread(), syncing)
        discarding = threading.Thread(target=received.discard)
        discarding.start()
        discarding.join(timeout=0.2)
        still_waiting = discarding.is_alive()
        release.set()
        discarding.join(timeout=30)

    assert still_waiting, "discard closed the file under a running fsync"
    assert spool.error is None
    assert not spool.path.exists()


def test_the_fsync_starts_on_arrival_not_in_the_handler(
    in_process_appliance: Appliance, monkeypatch: pytest.MonkeyPatch
) -> None:
    # If a pynetdicom upgrade stopped triggering EVT_DIMSE_RECV with the
    # spool, the handler would fsync by itself, only later: this notices.
    finishers: list[str] = []
    original = SpoolFile.finish

    def recorded(self: SpoolFile) -> None:
        finishers.append(threading.current_thread().name)
        original(self)

    monkeypatch.setattr(SpoolFile, "finish", recorded)
    images = [
        renamed_copy(sample_file("US1_UNCR.dcm"), patient_id=f"EARLY{n}")
        for n in range(3)
    ]

    statuses = send_datasets(in_process_appliance.settings.dicom_port, images)

    assert statuses == [SUCCESS] * 3
    assert len(finishers) == 3
    assert all(name.startswith("fsync") for name in finishers), finishers
