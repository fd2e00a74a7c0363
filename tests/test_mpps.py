"""MPPS: pynetdicom as the modality, the real process as the SCP (PS3.4 F.7)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import datetime

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association

from appliance import db
from appliance.state.mpps import get_step, steps_for_entry
from appliance.state.worklist import Status, WorklistEntry, get_entry
from tests.conftest import RunningAppliance, make_appliance
from tests.dicom_services_helpers import schedule

pytestmark = pytest.mark.e2e

MPPS = "1.2.840.10008.3.1.2.3.3"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAppliance]:
    running = make_appliance(tmp_path_factory.mktemp("mpps") / "data")
    running.start()
    yield running
    running.stop()


@pytest.fixture
def assoc(served: RunningAppliance) -> Iterator[Association]:
    ae = AE("PYNETDICOM")
    ae.add_requested_context(MPPS)
    association = ae.associate("127.0.0.1", served.dicom_port, ae_title="APPLIANCE")
    assert association.is_established
    yield association
    association.release()


def _in_progress(entry: WorklistEntry | None, **item_values: str) -> Dataset:
    """An N-CREATE attribute list as a modality sends it (PS3.4 Table F.7.2-1)."""
    item = Dataset()
    item.StudyInstanceUID = entry.study_uid if entry else generate_uid()
    item.AccessionNumber = entry.accession_number if entry else ""
    item.ScheduledProcedureStepID = entry.sps_id if entry else ""
    item.RequestedProcedureID = entry.requested_procedure_id if entry else ""
    item.ReferencedStudySequence = Sequence([])
    for keyword, value in item_values.items():
        setattr(item, keyword, value)
    ds = Dataset()
    ds.ScheduledStepAttributesSequence = Sequence([item])
    ds.PatientName = entry.patient_name if entry else "ANON^X"
    ds.PatientID = entry.patient_id if entry else "X"
    ds.PerformedProcedureStepID = "PPS-1"
    ds.PerformedStationAETitle = "PYNETDICOM"
    ds.PerformedProcedureStepStartDate = datetime.now().strftime("%Y%m%d")
    ds.PerformedProcedureStepStartTime = datetime.now().strftime("%H%M%S")
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "US"
    ds.PerformedSeriesSequence = Sequence([])
    return ds


def _final(state: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = state
    ds.PerformedProcedureStepEndDate = datetime.now().strftime("%Y%m%d")
    ds.PerformedProcedureStepEndTime = datetime.now().strftime("%H%M%S")
    series = Dataset()
    series.SeriesInstanceUID = generate_uid()
    series.ReferencedImageSequence = Sequence([])
    ds.PerformedSeriesSequence = Sequence([series])
    return ds


def _entry(served: RunningAppliance, entry_id: int) -> WorklistEntry:
    with closing(db.connect(served.data_dir / "app.db", readonly=True)) as conn:
        entry = get_entry(conn, entry_id)
    assert entry is not None
    return entry


def _create(assoc: Association, ds: Dataset, uid: str | None = None) -> int:
    status, _ = assoc.send_n_create(ds, MPPS, uid or generate_uid())
    return int(status.Status)


@pytest.mark.parametrize("final", ["COMPLETED", "DISCONTINUED"])
def test_a_step_marks_its_entry_in_progress_then_done(
    served: RunningAppliance, assoc: Association, final: str
) -> None:
    entry = schedule(served, accession_number=f"M-{final}")
    uid = generate_uid()

    assert _create(assoc, _in_progress(entry), uid) == 0x0000
    assert _entry(served, entry.id).status is Status.IN_PROGRESS

    status, _ = assoc.send_n_set(_final(final), MPPS, uid)
    assert status.Status == 0x0000
    assert _entry(served, entry.id).status is Status(final)

    with closing(db.connect(served.data_dir / "app.db", readonly=True)) as conn:
        step = get_step(conn, uid)
        assert step is not None and step.status is Status(final)
        assert step.worklist_ids == (entry.id,)
        assert [s.sop_instance_uid for s in steps_for_entry(conn, entry.id)] == [uid]
        kept = Dataset.from_json(step.attributes)
    assert kept.PerformedProcedureStepStatus == final
    assert len(kept.PerformedSeriesSequence) == 1
    assert kept.PerformedProcedureStepStartDate


def test_a_step_links_by_accession_without_the_step_id(
    served: RunningAppliance, assoc: Association
) -> None:
    entry = schedule(served, accession_number="MPPS-ACC")

    ds = _in_progress(entry, ScheduledProcedureStepID="")
    assert _create(assoc, ds) == 0x0000

    assert _entry(served, entry.id).status is Status.IN_PROGRESS


def test_an_unscheduled_step_is_kept_and_touches_no_entry(
    served: RunningAppliance, assoc: Association
) -> None:
    entry = schedule(served, accession_number="MPPS-UNTOUCH")
    uid = generate_uid()

    assert _create(assoc, _in_progress(None), uid) == 0x0000

    assert _entry(served, entry.id).status is Status.SCHEDULED
    with closing(db.connect(served.data_dir / "app.db", readonly=True)) as conn:
        step = get_step(conn, uid)
    assert step is not None and step.worklist_ids == ()


def test_the_scp_makes_the_uid_when_the_modality_sends_none(
    served: RunningAppliance, assoc: Association
) -> None:
    def count() -> int:
        with closing(db.connect(served.data_dir / "app.db", readonly=True)) as conn:
            return int(
                conn.execute("SELECT count(*) FROM performed_steps").fetchone()[0]
            )

    before = count()
    status, _ = assoc.send_n_create(_in_progress(None), MPPS, None)

    assert status.Status == 0x0000
    assert count() == before + 1


def test_refusals_have_their_statuses(
    served: RunningAppliance, assoc: Association
) -> None:
    entry = schedule(served, accession_number="MPPS-REFUSE")
    uid = generate_uid()
    wrong = _in_progress(entry)
    wrong.PerformedProcedureStepStatus = "COMPLETED"

    assert _create(assoc, wrong) == 0x0106  # invalid attribute value
    assert _create(assoc, _in_progress(entry), uid) == 0x0000
    assert _create(assoc, _in_progress(entry), uid) == 0x0111  # duplicate

    status, _ = assoc.send_n_set(_final("COMPLETED"), MPPS, generate_uid())
    assert status.Status == 0x0112  # no such instance
    status, _ = assoc.send_n_set(_final("FINISHED"), MPPS, uid)
    assert status.Status == 0x0106

    status, _ = assoc.send_n_set(_final("COMPLETED"), MPPS, uid)
    assert status.Status == 0x0000
    status, _ = assoc.send_n_set(_final("DISCONTINUED"), MPPS, uid)
    assert status.Status == 0x0110 and status.ErrorID == 0xA710
    assert _entry(served, entry.id).status is Status.COMPLETED


def test_the_log_names_steps_but_no_patient(served: RunningAppliance) -> None:
    log = served.log()

    assert "MPPS" in log and "IN PROGRESS from PYNETDICOM" in log
    for secret in ("DOE^JANE", "PID-1", "19800101", "ANON^X"):
        assert secret not in log
