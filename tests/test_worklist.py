"""Modality Worklist: the state API, the CLI, matching, and DCMTK's findscu."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from appliance import db
from appliance.dicom import matching
from appliance.dicom.worklist import entry_dataset
from appliance.state.schema import open_state
from appliance.state.worklist import (
    NewEntry,
    Status,
    add_entry,
    list_entries,
    open_entries,
    remove_entry,
    set_status,
)
from tests.conftest import RunningAppliance, make_appliance
from tests.dicom_services_helpers import findscu, register, schedule

NOON = datetime(2026, 12, 3, 12, 0)

# Every return key a modality asks for (PS3.4 Table K.6-1).
RETURN_KEYS = [
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
    "StudyInstanceUID",
    "ReferringPhysicianName",
    "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepSequence[0].Modality",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
]


@pytest.fixture
def state(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    with closing(open_state(tmp_path / "app.db")) as conn:
        yield conn


def _new(**changes: object) -> NewEntry:
    values: dict[str, object] = {
        "patient_id": "PID-1",
        "patient_name": "DOE^JANE",
        "accession_number": "ACC-1",
        "scheduled": NOON,
        "birth_date": "1980-01-01",
        "sex": "f",
        "issuer": "CLINIC-A",
        "description": "Obstetric ultrasound",
        "station_ae": "SEQUOIA",
    }
    return NewEntry(**{**values, **changes})  # type: ignore[arg-type]


def test_an_entry_gets_its_ids_and_study_uid_when_made(
    state: sqlite3.Connection,
) -> None:
    first = add_entry(state, _new())
    second = add_entry(state, _new(accession_number="ACC-2"))

    assert first.sps_id == "SPS000001" and first.requested_procedure_id == "RP000001"
    assert second.sps_id == "SPS000002"
    assert first.study_uid != second.study_uid
    assert first.study_uid.startswith("1.2.")
    assert (first.birth_date, first.sex, first.status) == (
        "19800101",
        "F",
        Status.SCHEDULED,
    )
    assert (first.scheduled_date, first.scheduled_time) == ("20261203", "120000")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"patient_id": " "}, "patient_id"),
        ({"patient_name": "^"}, "patient_name"),
        ({"birth_date": "1980-13-45"}, "birth_date"),
        ({"sex": "X"}, "sex"),
        ({"accession_number": "A" * 17}, "accession_number"),
        ({"station_ae": "BAD\\AE"}, "AE title"),
        ({"description": "back\\slash"}, "description"),
    ],
)
def test_invalid_values_are_refused_by_name(
    state: sqlite3.Connection, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        add_entry(state, _new(**changes))


def test_an_accession_number_is_scheduled_once(state: sqlite3.Connection) -> None:
    add_entry(state, _new())

    with pytest.raises(ValueError, match="already scheduled"):
        add_entry(state, _new(patient_id="OTHER"))
    assert len(list_entries(state, include_done=True)) == 1


def test_an_empty_accession_number_is_numbered_by_the_day(
    state: sqlite3.Connection,
) -> None:
    add_entry(state, _new(accession_number="20261203-002"))
    add_entry(state, _new(accession_number="20261203-XY"))

    numbered = [
        add_entry(state, _new(accession_number=" ")).accession_number for _ in range(2)
    ]
    next_day = add_entry(
        state, _new(accession_number="", scheduled=NOON.replace(day=4))
    )

    assert numbered == ["20261203-003", "20261203-004"]
    assert next_day.accession_number == "20261204-001"


def test_done_and_stale_entries_drop_off_the_open_list(
    state: sqlite3.Connection,
) -> None:
    today = NOON.date()
    fresh = add_entry(state, _new())
    done = add_entry(state, _new(accession_number="ACC-2"))
    stopped = add_entry(state, _new(accession_number="ACC-3"))
    stale = add_entry(
        state, _new(accession_number="ACC-4", scheduled=NOON - timedelta(days=4))
    )
    started = add_entry(
        state, _new(accession_number="ACC-5", scheduled=NOON - timedelta(days=3))
    )
    set_status(state, [done.id], Status.COMPLETED)
    set_status(state, [stopped.id], Status.DISCONTINUED)
    set_status(state, [started.id], Status.IN_PROGRESS)

    listed = [e.id for e in open_entries(state, stale_days=3, today=today)]

    assert listed == [started.id, fresh.id]
    assert stale.id not in listed
    assert len(list_entries(state, include_done=True)) == 5


def test_a_done_entry_is_never_reopened(state: sqlite3.Connection) -> None:
    entry = add_entry(state, _new())
    set_status(state, [entry.id], Status.COMPLETED)
    set_status(state, [entry.id], Status.IN_PROGRESS)

    assert list_entries(state, include_done=True)[0].status is Status.COMPLETED
    assert remove_entry(state, entry.id)
    assert not remove_entry(state, entry.id)


def _query(**step_keys: str) -> Dataset:
    step = Dataset()
    for keyword in ("ScheduledStationAETitle", "Modality"):
        setattr(step, keyword, "")
    step.ScheduledProcedureStepStartDate = ""
    for keyword, value in step_keys.items():
        setattr(step, keyword, value)
    query = Dataset()
    query.PatientName = ""
    query.ScheduledProcedureStepSequence = Sequence([step])
    return query


@pytest.mark.parametrize(
    ("step_keys", "expected"),
    [
        ({}, True),
        ({"ScheduledProcedureStepStartDate": "20261203"}, True),
        ({"ScheduledProcedureStepStartDate": "20261201-20261205"}, True),
        ({"ScheduledProcedureStepStartDate": "20261204-"}, False),
        ({"ScheduledProcedureStepStartDate": "-20261203"}, True),
        ({"ScheduledStationAETitle": "SEQUOIA"}, True),
        ({"ScheduledStationAETitle": "SEQ*"}, True),
        ({"ScheduledStationAETitle": "OTHER"}, False),
        ({"Modality": "US"}, True),
        ({"Modality": "CT"}, False),
        ({"ScheduledProcedureStepStartTime": "1100-1300"}, True),
        ({"ScheduledProcedureStepStartTime": "1201-"}, False),
    ],
)
def test_worklist_matching_on_the_scheduled_step(
    state: sqlite3.Connection, step_keys: dict[str, str], expected: bool
) -> None:
    entry = add_entry(state, _new())

    response = matching.match(_query(**step_keys), entry_dataset(entry))

    assert (response is not None) is expected
    if response is not None:
        step = response.ScheduledProcedureStepSequence[0]
        assert step.ScheduledStationAETitle == "SEQUOIA"
        assert set(response.dir()) == {"PatientName", "ScheduledProcedureStepSequence"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [("doe^jane", True), ("DOE*", True), ("D?E^J*", True), ("DOE^JOHN", False)],
)
def test_worklist_matching_on_names_ignores_case_and_takes_wildcards(
    state: sqlite3.Connection, name: str, expected: bool
) -> None:
    entry = add_entry(state, _new())
    query = _query()
    query.PatientName = name

    assert (matching.match(query, entry_dataset(entry)) is not None) is expected


# End to end: the real process and DCMTK's findscu.


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAppliance]:
    running = make_appliance(tmp_path_factory.mktemp("worklist") / "data")
    register(running, "FINDSCU")
    running.start()
    yield running
    running.stop()


@pytest.mark.e2e
def test_findscu_gets_every_attribute_of_an_entry_made_with_the_state_api(
    served: RunningAppliance, tmp_path: Path
) -> None:
    entry = schedule(
        served,
        accession_number="E2E-1",
        patient_name="MÜLLER^ANNA",
        scheduled=datetime.combine(date.today(), datetime.min.time()).replace(hour=9),
    )

    today = date.today().strftime("%Y%m%d")
    keys = [
        *RETURN_KEYS,
        f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={today}",
        "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=SEQUOIA",
        "ScheduledProcedureStepSequence[0].Modality=US",
        "AccessionNumber=E2E-1",
    ]
    responses = findscu(served, "-W", keys, tmp_path)

    assert len(responses) == 1
    found = responses[0]
    step = found.ScheduledProcedureStepSequence[0]
    assert (found.PatientID, found.IssuerOfPatientID) == ("PID-1", "CLINIC-A")
    assert str(found.PatientName) == "MÜLLER^ANNA"
    assert (found.PatientBirthDate, found.PatientSex) == ("19800101", "F")
    assert found.StudyInstanceUID == entry.study_uid
    assert found.RequestedProcedureID == entry.requested_procedure_id
    assert found.RequestedProcedureDescription == "Obstetric ultrasound"
    assert step.ScheduledProcedureStepID == entry.sps_id
    assert step.ScheduledProcedureStepStartDate == today
    assert step.ScheduledProcedureStepStartTime == "090000"
    assert step.ScheduledProcedureStepDescription == "Obstetric ultrasound"
    assert (step.Modality, step.ScheduledStationAETitle) == ("US", "SEQUOIA")


@pytest.mark.e2e
def test_findscu_matches_station_modality_dates_and_wildcards(
    served: RunningAppliance, tmp_path: Path
) -> None:
    today = date.today()
    schedule(served, accession_number="M-1", patient_name="SMITH^ANN")
    schedule(
        served,
        accession_number="M-2",
        patient_name="SMITH^BOB",
        station_ae="OTHERUS",
        scheduled=datetime.now() + timedelta(days=2),
    )

    def accessions(*keys: str) -> set[str]:
        found = findscu(served, "-W", ["AccessionNumber", *keys], tmp_path)
        return {
            str(r.AccessionNumber) for r in found if str(r.AccessionNumber)[:2] == "M-"
        }

    step = "ScheduledProcedureStepSequence[0]"
    two_days = (today + timedelta(days=2)).strftime("%Y%m%d")
    assert accessions("PatientName=SMITH*") == {"M-1", "M-2"}
    assert accessions("PatientName=smith^b?b") == {"M-2"}
    assert accessions(f"{step}.ScheduledStationAETitle=SEQUOIA") == {"M-1"}
    assert accessions(f"{step}.Modality=CT") == set()
    assert accessions(f"{step}.ScheduledProcedureStepStartDate={two_days}-") == {"M-2"}
    today_range = f"{today:%Y%m%d}-{today:%Y%m%d}"
    assert accessions(f"{step}.ScheduledProcedureStepStartDate={today_range}") == {
        "M-1"
    }


@pytest.mark.e2e
def test_completed_and_stale_entries_drop_off_for_findscu(
    served: RunningAppliance, tmp_path: Path
) -> None:
    done = schedule(served, accession_number="D-1")
    schedule(
        served, accession_number="D-2", scheduled=datetime.now() - timedelta(days=10)
    )
    schedule(served, accession_number="D-3")
    with closing(db.connect(served.data_dir / "app.db")) as conn:
        set_status(conn, [done.id], Status.COMPLETED)

    found = findscu(served, "-W", ["AccessionNumber=D-*"], tmp_path)

    assert [str(r.AccessionNumber) for r in found] == ["D-3"]


@pytest.mark.e2e
def test_the_cli_adds_lists_and_removes_what_findscu_sees(
    served: RunningAppliance, tmp_path: Path
) -> None:
    when = datetime.now().strftime("%Y-%m-%dT%H:%M")
    added = served.cli(
        "worklist",
        "add",
        "--patient-id",
        "CLI-7",
        "--name",
        "ROE^RITA",
        "--birth-date",
        "1990-05-06",
        "--sex",
        "F",
        "--issuer",
        "CLINIC-B",
        "--accession",
        "CLI-ACC",
        "--scheduled",
        when,
        "--description",
        "Pelvic ultrasound",
        "--station-ae",
        "SEQUOIA",
        "--modality",
        "US",
    )
    assert added.returncode == 0, added.stderr
    entry_id = added.stdout.split()[2].rstrip(":")

    listing = served.cli("worklist", "list")
    assert "CLI-ACC" in listing.stdout and "SCHEDULED" in listing.stdout
    found = findscu(served, "-W", ["AccessionNumber=CLI-ACC", "PatientID"], tmp_path)
    assert [r.PatientID for r in found] == ["CLI-7"]

    assert served.cli("worklist", "remove", entry_id).returncode == 0
    assert findscu(served, "-W", ["AccessionNumber=CLI-ACC"], tmp_path) == []
    missing = served.cli("worklist", "remove", entry_id)
    assert missing.returncode == 2 and "no worklist entry" in missing.stderr

    bad = served.cli(
        "worklist",
        "add",
        "--patient-id",
        "X",
        "--name",
        "A^B",
        "--accession",
        "Z",
        "--scheduled",
        "tomorrow",
    )
    assert bad.returncode == 2 and "YYYY-MM-DDTHH:MM" in bad.stderr


@pytest.mark.e2e
def test_no_patient_data_in_the_log(served: RunningAppliance) -> None:
    log = served.log()

    assert "Worklist query from FINDSCU" in log
    for secret in ("DOE^JANE", "MÜLLER", "PID-1", "19800101", "CLI-7", "ROE^RITA"):
        assert secret not in log
