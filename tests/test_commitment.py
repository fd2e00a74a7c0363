"""Storage Commitment push model: pynetdicom as the modality (PS3.4 J.3).

The report comes back on the same association when the modality keeps it
open and takes it, and otherwise on a new association to the modality's
registered host and port (a pynetdicom SCP started here).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt

from tests.conftest import RunningAppliance, make_appliance
from tests.dicom_helpers import renamed_copy, send_datasets
from tests.dicom_services_helpers import (
    STORAGE_COMMITMENT,
    ReportCatcher,
    commitment_peer,
    commitment_request,
    register,
)

pytestmark = pytest.mark.e2e

WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"  # not what was stored


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAppliance]:
    running = make_appliance(tmp_path_factory.mktemp("commit") / "data")
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stored(
    served: RunningAppliance, ultrasound_files: dict[str, Path]
) -> list[Dataset]:
    datasets = [renamed_copy(ultrasound_files["ge_rgb"]) for _ in range(2)]
    assert send_datasets(served.dicom_port, datasets) == [0x0000, 0x0000]
    return datasets


def _references(stored: list[Dataset]) -> list[tuple[str, str]]:
    return [(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in stored]


def _failed(info: Dataset) -> dict[str, int]:
    return {
        str(item.ReferencedSOPInstanceUID): int(item.FailureReason)
        for item in info.get("FailedSOPSequence", [])
    }


def _committed(info: Dataset) -> set[str]:
    return {
        str(i.ReferencedSOPInstanceUID) for i in info.get("ReferencedSOPSequence", [])
    }


def test_report_on_the_same_association(
    served: RunningAppliance, stored: list[Dataset]
) -> None:
    missing = generate_uid()
    wrong_class = str(stored[1].SOPInstanceUID)
    request = commitment_request(
        [*_references(stored[:1]), (CT_IMAGE, missing), (CT_IMAGE, wrong_class)]
    )
    catcher = ReportCatcher()
    ae = AE("PYNETDICOM")
    ae.add_requested_context(STORAGE_COMMITMENT)
    assoc = ae.associate(
        "127.0.0.1",
        served.dicom_port,
        ae_title="APPLIANCE",
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, catcher)],
    )
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(
            request, 1, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE
        )
        assert status.Status == 0x0000
        event_type, info = catcher.wait()
    finally:
        assoc.release()

    assert event_type == 2  # some failed
    assert info.TransactionUID == request.TransactionUID
    assert info.RetrieveAETitle == "APPLIANCE"
    assert _committed(info) == {str(stored[0].SOPInstanceUID)}
    assert _failed(info) == {missing: 0x0112, wrong_class: 0x0119}
    assert "reported to PYNETDICOM on the same association" in served.log()


def test_report_on_a_new_association_to_the_registered_port(
    served: RunningAppliance, stored: list[Dataset]
) -> None:
    request = commitment_request(_references(stored))
    with commitment_peer("COMMITSCU") as (port, catcher):
        register(served, "COMMITSCU", port)
        ae = AE("COMMITSCU")
        ae.add_requested_context(STORAGE_COMMITMENT)
        assoc = ae.associate("127.0.0.1", served.dicom_port, ae_title="APPLIANCE")
        assert assoc.is_established
        status, _ = assoc.send_n_action(
            request, 1, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE
        )
        assoc.release()
        assert status.Status == 0x0000

        event_type, info = catcher.wait()

    assert event_type == 1  # all committed
    assert info.TransactionUID == request.TransactionUID
    assert _committed(info) == {str(ds.SOPInstanceUID) for ds in stored}
    assert "FailedSOPSequence" not in info
    assert "reported to COMMITSCU at 127.0.0.1" in served.log()


def test_a_modality_without_a_port_is_told_nothing_and_the_log_says_why(
    served: RunningAppliance, stored: list[Dataset]
) -> None:
    register(served, "NOPORT")
    ae = AE("NOPORT")
    ae.add_requested_context(STORAGE_COMMITMENT)
    assoc = ae.associate("127.0.0.1", served.dicom_port, ae_title="APPLIANCE")
    request = commitment_request(_references(stored))
    status, _ = assoc.send_n_action(request, 1, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE)
    assoc.release()
    assert status.Status == 0x0000

    deadline = time.monotonic() + 15
    while "NOPORT has no registered port" not in served.log():
        assert time.monotonic() < deadline, served.log()[-2000:]
        time.sleep(0.2)


def test_malformed_requests_are_refused(served: RunningAppliance) -> None:
    ae = AE("PYNETDICOM")
    ae.add_requested_context(STORAGE_COMMITMENT)
    assoc = ae.associate("127.0.0.1", served.dicom_port, ae_title="APPLIANCE")
    try:
        empty = Dataset()
        empty.TransactionUID = generate_uid()
        status, _ = assoc.send_n_action(
            empty, 1, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE
        )
        assert status.Status == 0x0115
        status, _ = assoc.send_n_action(
            commitment_request([(CT_IMAGE, generate_uid())]),
            7,
            STORAGE_COMMITMENT,
            WELL_KNOWN_INSTANCE,
        )
        assert status.Status == 0x0123
    finally:
        assoc.release()
