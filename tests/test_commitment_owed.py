"""Storage commitment reports the modality could not take at once.

A report that cannot be delivered (the modality is off) is kept in
``app.db`` and tried again: after a restart of the appliance, and every
few minutes for a day, then dropped with an error in the log. The modality
is a pynetdicom SCP started here, on loopback.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE

from appliance.dicom.commitment import GIVE_UP_AFTER, RETRY_EVERY, StorageCommitment
from appliance.index.schema import open_index
from appliance.state import commitments, open_state
from appliance.state.commitments import OwedReport
from appliance.state.modalities import add_modality, list_modalities
from tests.conftest import RunningAppliance, free_port, make_appliance
from tests.dicom_helpers import renamed_copy, send_datasets
from tests.dicom_services_helpers import (
    STORAGE_COMMITMENT,
    commitment_peer,
    commitment_request,
    register,
)

WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"


def _owed(app_db: Path) -> list[tuple[str, int, str]]:
    uri = f"file:{app_db}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        return conn.execute(
            "SELECT transaction_uid, attempts, next_attempt_at FROM commitment_reports"
        ).fetchall()


@pytest.mark.e2e
def test_a_report_owed_before_a_restart_is_delivered_after_it(
    tmp_path: Path, ultrasound_files: dict[str, Path]
) -> None:
    served = make_appliance(tmp_path / "data")
    served.start()
    modality_port = free_port()  # nothing listens there yet: the machine is off
    try:
        register(served, "SEQUOIA", modality_port)
        dataset = renamed_copy(ultrasound_files["ge_rgb"])
        assert send_datasets(served.dicom_port, [dataset]) == [0x0000]
        transaction = _ask_commitment(served, "SEQUOIA", dataset)
        _wait_for_log(served, "did not accept an association")
    finally:
        assert served.stop() == 0

    assert [row[0] for row in _owed(served.data_dir / "app.db")] == [transaction]

    with commitment_peer("SEQUOIA", modality_port) as (_port, catcher):
        served.start()
        try:
            event_type, info = catcher.wait()
            _wait_until(lambda: not _owed(served.data_dir / "app.db"))
        finally:
            served.stop()

    assert event_type == 1  # all committed
    assert info.TransactionUID == transaction
    assert [str(i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence] == [
        str(dataset.SOPInstanceUID)
    ]


@pytest.fixture
def owing(tmp_path: Path) -> Iterator[tuple[StorageCommitment, Path, int]]:
    """A StorageCommitment with an empty index and SEQUOIA registered."""
    app_db, index_db = tmp_path / "app.db", tmp_path / "index.db"
    port = free_port()
    with closing(open_state(app_db)) as conn:
        add_modality(conn, "SEQUOIA", host="127.0.0.1", port=port)
    open_index(index_db).close()

    def modalities() -> list:
        with closing(open_state(app_db)) as conn:
            return list_modalities(conn)

    service = StorageCommitment(index_db, modalities, "APPLIANCE", 5.0, app_db=app_db)
    yield service, app_db, port
    service.stop()


def _keep(app_db: Path, asked_at: datetime, due: datetime) -> str:
    transaction = generate_uid()
    report = OwedReport(
        transaction, "SEQUOIA", "127.0.0.1", [(US_IMAGE, generate_uid())], asked_at, 0
    )
    with closing(open_state(app_db)) as conn:
        commitments.remember(conn, report, due)
    return transaction


def test_a_due_report_goes_to_the_modality_once_it_listens(
    owing: tuple[StorageCommitment, Path, int],
) -> None:
    service, app_db, port = owing
    now = datetime.now(UTC)
    transaction = _keep(app_db, now - timedelta(hours=1), now)

    with commitment_peer("SEQUOIA", port) as (_port, catcher):
        service.retry_owed()
        event_type, info = catcher.wait()

    assert event_type == 2  # the empty index holds none of it: all failed
    assert info.TransactionUID == transaction
    assert int(info.FailedSOPSequence[0].FailureReason) == 0x0112
    assert _owed(app_db) == []


def test_a_report_the_modality_still_refuses_waits_for_the_next_turn(
    owing: tuple[StorageCommitment, Path, int],
) -> None:
    service, app_db, _port = owing
    now = datetime.now(UTC)
    transaction = _keep(app_db, now - timedelta(hours=1), now)

    service.retry_owed()

    [(uid, attempts, next_attempt_at)] = _owed(app_db)
    assert (uid, attempts) == (transaction, 1)
    wait = datetime.fromisoformat(next_attempt_at) - now
    assert RETRY_EVERY <= wait < RETRY_EVERY + timedelta(minutes=1)


def test_a_report_not_yet_due_is_left_alone(
    owing: tuple[StorageCommitment, Path, int],
) -> None:
    service, app_db, port = owing
    now = datetime.now(UTC)
    _keep(app_db, now, now + RETRY_EVERY)

    with commitment_peer("SEQUOIA", port) as (_port, catcher):
        service.retry_owed()
        assert not catcher.arrived.wait(1.0)

    assert [attempts for _uid, attempts, _next in _owed(app_db)] == [0]


def test_after_a_day_the_report_is_dropped_and_the_log_says_so(
    owing: tuple[StorageCommitment, Path, int], caplog: pytest.LogCaptureFixture
) -> None:
    service, app_db, port = owing
    now = datetime.now(UTC)
    transaction = _keep(app_db, now - GIVE_UP_AFTER - timedelta(minutes=1), now)

    with caplog.at_level(logging.ERROR, logger="appliance.dicom.commitment"):
        with commitment_peer("SEQUOIA", port) as (_port, catcher):
            service.retry_owed()
            assert not catcher.arrived.wait(1.0)

    assert _owed(app_db) == []
    assert f"Storage commitment {transaction}: gave up reporting" in caplog.text


def _ask_commitment(served: RunningAppliance, ae_title: str, dataset: Dataset) -> str:
    request = commitment_request(
        [(str(dataset.SOPClassUID), str(dataset.SOPInstanceUID))]
    )
    ae = AE(ae_title)
    ae.add_requested_context(STORAGE_COMMITMENT)
    assoc = ae.associate("127.0.0.1", served.dicom_port, ae_title="APPLIANCE")
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(
            request, 1, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE
        )
    finally:
        assoc.release()
    assert status.Status == 0x0000
    return str(request.TransactionUID)


def _wait_for_log(served: RunningAppliance, text: str, timeout: float = 30) -> None:
    _wait_until(lambda: text in served.log(), timeout)


def _wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
