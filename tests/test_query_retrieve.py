"""Query/Retrieve: the SQL, the matcher, and the real process against DCMTK's
findscu, movescu (into storescp) and getscu, and pynetdicom.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE

from appliance.dicom import matching
from appliance.index import open_index
from appliance.index import query as index_query
from appliance.index.ingest import add_instance
from tests.conftest import RunningAppliance, make_appliance, sample_file
from tests.dicom_helpers import renamed_copy, send_datasets
from tests.dicom_services_helpers import (
    findscu,
    received,
    register,
    run_tool,
    storescp,
)
from tests.index_helpers import record_of

STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}

# The SQL, on an index built in memory from real headers.


@pytest.fixture
def index(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = open_index(tmp_path / "index.db")
    rgb = sample_file("US1_UNCR.dcm")
    records = [
        record_of(
            rgb,
            patient_id="SHARED",
            patient_name="Doe^Jane",
            patient_sex="F",
            patient_birth_date="19800101",
            study_date="20240105",
            study_time="093000",
            accession_number="A[1]",
        ),
        record_of(
            rgb,
            patient_id="SHARED",
            patient_name="DOE^JOHN",
            patient_sex="M",
            patient_birth_date="19750505",
            study_date="20240110",
            study_time="141500",
            accession_number="A2",
        ),
        record_of(
            rgb,
            patient_id="OTHER",
            patient_name="ROE^RITA",
            study_date="20231201",
            study_time="",
            accession_number="A3",
            modality="SR",
        ),
    ]
    conn.execute("BEGIN IMMEDIATE")
    for record in records:
        add_instance(conn, record)
    conn.execute("COMMIT")
    yield conn
    conn.close()


def _find(conn: sqlite3.Connection, level: str, **keys: str) -> list[dict]:
    vrs = {"StudyDate": "DA", "StudyTime": "TM", "PatientName": "PN"}
    search = index_query.Search(
        level,
        tuple(
            index_query.Key(k, vrs.get(k, "LO"), tuple(v.split("\\")))
            for k, v in keys.items()
        ),
        counts=True,
    )
    return index_query.find(conn, search)


def test_two_people_with_one_id_are_two_patients(index: sqlite3.Connection) -> None:
    found = _find(index, "PATIENT", PatientID="SHARED")

    assert [(p["PatientName"], p["PatientSex"]) for p in found] == [
        ("Doe^Jane", "F"),
        ("DOE^JOHN", "M"),
    ]
    assert [p["NumberOfPatientRelatedStudies"] for p in found] == [1, 1]


@pytest.mark.parametrize(
    ("keys", "accessions"),
    [
        ({"StudyDate": "20240101-20240131"}, ["A2", "A[1]"]),
        ({"StudyDate": "20240106-"}, ["A2"]),
        ({"StudyDate": "-20231231"}, ["A3"]),
        ({"StudyDate": "20240105"}, ["A[1]"]),
        ({"StudyTime": "0900-1000"}, ["A[1]"]),
        ({"StudyTime": "1415"}, ["A2"]),
        ({"StudyTime": "14-"}, ["A2"]),
        ({"PatientName": "doe*"}, ["A2", "A[1]"]),
        ({"PatientName": "DOE^J?HN"}, ["A2"]),
        ({"PatientName": "doe^jane^^"}, ["A[1]"]),
        ({"AccessionNumber": "A[1]"}, ["A[1]"]),
        ({"AccessionNumber": "A[*"}, ["A[1]"]),
        ({"AccessionNumber": "A?"}, ["A2", "A3"]),
        ({"ModalitiesInStudy": "SR"}, ["A3"]),
        ({"ModalitiesInStudy": "U*"}, ["A2", "A[1]"]),
        ({"PatientID": "' OR 1=1 --"}, []),
    ],
)
def test_study_keys_match_as_ps3_4_c_2_2_2_says(
    index: sqlite3.Connection, keys: dict[str, str], accessions: list[str]
) -> None:
    found = _find(index, "STUDY", **keys)

    assert sorted(s["AccessionNumber"] for s in found) == accessions


def test_a_list_of_uids_matches_any_of_them(index: sqlite3.Connection) -> None:
    studies = _find(index, "STUDY")
    wanted = [studies[0]["StudyInstanceUID"], studies[2]["StudyInstanceUID"]]

    found = _find(index, "STUDY", StudyInstanceUID="\\".join(wanted))

    assert sorted(s["StudyInstanceUID"] for s in found) == sorted(wanted)


def test_lower_levels_and_counts(index: sqlite3.Connection) -> None:
    study = _find(index, "STUDY", AccessionNumber="A2")[0]

    series = _find(index, "SERIES", StudyInstanceUID=study["StudyInstanceUID"])
    images = _find(index, "IMAGE", SeriesInstanceUID=series[0]["SeriesInstanceUID"])

    assert study["NumberOfStudyRelatedInstances"] == 1
    assert len(series) == 1 and series[0]["NumberOfSeriesRelatedInstances"] == 1
    assert len(images) == 1 and images[0]["SOPClassUID"].startswith("1.2.840")
    assert images[0]["PatientName"] == "DOE^JOHN"


# The matcher: sequences (PS3.4 C.2.2.2.6).


def _item(**values: str) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def test_sequence_matching() -> None:
    candidate = Dataset()
    candidate.PatientID = "P"
    candidate.ReferencedStudySequence = Sequence(
        [
            _item(ReferencedSOPClassUID="1.2.3", ReferencedSOPInstanceUID="9.1"),
            _item(ReferencedSOPClassUID="1.2.4", ReferencedSOPInstanceUID="9.2"),
        ]
    )

    def ask(*items: Dataset) -> Dataset | None:
        query = Dataset()
        query.PatientID = ""
        query.ReferencedStudySequence = Sequence(list(items))
        return matching.match(query, candidate)

    whole = ask()
    assert whole is not None and len(whole.ReferencedStudySequence) == 2
    one = ask(_item(ReferencedSOPClassUID="1.2.4", ReferencedSOPInstanceUID=""))
    assert one is not None
    assert [i.ReferencedSOPInstanceUID for i in one.ReferencedStudySequence] == ["9.2"]
    assert list(one.ReferencedStudySequence[0].keys()) == [
        pydicom.tag.Tag("ReferencedSOPClassUID"),
        pydicom.tag.Tag("ReferencedSOPInstanceUID"),
    ]
    assert ask(_item(ReferencedSOPClassUID="1.2.5")) is None


# End to end: the real process.


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAppliance]:
    running = make_appliance(tmp_path_factory.mktemp("qr") / "data")
    for peer in ("FINDSCU", "MOVESCU", "GETSCU"):
        register(running, peer)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def studies(served: RunningAppliance) -> dict[str, list[Dataset]]:
    """Jane and John share an ID; Rita has her own. John's study is mixed."""
    jane = renamed_copy(
        sample_file("US1_UNCR.dcm"),
        patient_id="SHARED",
        patient_name="DOE^JANE",
        birth_date="19800101",
        sex="F",
    )
    jane.AccessionNumber = "ACC-J"
    john = [
        renamed_copy(
            sample_file(name),
            patient_id="SHARED",
            patient_name="DOE^JOHN",
            birth_date="19750505",
            sex="M",
        )
        for name in ("color3d_jpeg_baseline.dcm", "US1_J2KR.dcm")
    ]
    for ds in john:
        ds.StudyInstanceUID = john[0].StudyInstanceUID
        ds.StudyDate, ds.AccessionNumber = "20160503", "ACC-K"
    rita = renamed_copy(
        sample_file("OBXXXX1A.dcm"),
        patient_id="OTHER-1",
        patient_name="ROE^RITA",
        sex="F",
    )
    rita.AccessionNumber = "ACC-R"
    sent = {"jane": [jane], "john": john, "rita": [rita]}
    everything = [ds for group in sent.values() for ds in group]
    assert send_datasets(served.dicom_port, everything) == [0] * len(everything)
    return sent


@pytest.mark.e2e
def test_patient_root_keeps_two_people_with_one_id_apart(
    served: RunningAppliance, studies: dict, tmp_path: Path
) -> None:
    keys = [
        "QueryRetrieveLevel=PATIENT",
        "PatientID=SHARED",
        "PatientName",
        "PatientSex",
        "PatientBirthDate",
        "NumberOfPatientRelatedStudies",
    ]
    found = findscu(served, "-P", keys, tmp_path)

    people = sorted(
        (str(p.PatientName), p.PatientSex, p.PatientBirthDate) for p in found
    )
    assert people == [("DOE^JANE", "F", "19800101"), ("DOE^JOHN", "M", "19750505")]
    assert {p.NumberOfPatientRelatedStudies for p in found} == {1}
    assert {p.RetrieveAETitle for p in found} == {"APPLIANCE"}


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("keys", "accessions"),
    [
        (["PatientID=SHARED"], {"ACC-J", "ACC-K"}),
        (["PatientName=doe^j*"], {"ACC-J", "ACC-K"}),
        (["PatientName=DOE^J?HN"], {"ACC-K"}),
        (["StudyDate=20160101-20161231"], {"ACC-K"}),
        (["StudyDate=-20050101"], {"ACC-J"}),
        (
            ["ModalitiesInStudy=US", "AccessionNumber=ACC-?"],
            {"ACC-J", "ACC-K", "ACC-R"},
        ),
        (["ModalitiesInStudy=CT"], set()),
        (["StudyID=13US1"], {"ACC-J"}),
    ],
)
def test_study_root_study_level(
    served: RunningAppliance,
    studies: dict,
    tmp_path: Path,
    keys: list[str],
    accessions: set[str],
) -> None:
    base = [
        "QueryRetrieveLevel=STUDY",
        "AccessionNumber",
        "PatientName",
        "StudyID",
        "StudyInstanceUID",
        "NumberOfStudyRelatedInstances",
    ]
    found = findscu(served, "-S", base + keys, tmp_path)

    assert {str(s.AccessionNumber) for s in found} == accessions
    for study in found:
        if study.AccessionNumber == "ACC-K":
            assert str(study.PatientName) == "DOE^JOHN"
            assert study.NumberOfStudyRelatedInstances == 2
            assert study.StudyID == "1"  # read from the stored file


@pytest.mark.e2e
def test_study_root_a_list_of_study_uids(
    served: RunningAppliance, studies: dict, tmp_path: Path
) -> None:
    uids = [studies["jane"][0].StudyInstanceUID, studies["rita"][0].StudyInstanceUID]

    found = findscu(
        served,
        "-S",
        ["QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + "\\".join(uids)],
        tmp_path,
    )

    assert sorted(s.StudyInstanceUID for s in found) == sorted(uids)


@pytest.mark.e2e
def test_series_and_image_levels(
    served: RunningAppliance, studies: dict, tmp_path: Path
) -> None:
    john = studies["john"]
    series = findscu(
        served,
        "-P",
        [
            "QueryRetrieveLevel=SERIES",
            "PatientID=SHARED",
            f"StudyInstanceUID={john[0].StudyInstanceUID}",
            "SeriesInstanceUID",
            "Modality",
            "NumberOfSeriesRelatedInstances",
        ],
        tmp_path / "series",
    )
    images = findscu(
        served,
        "-S",
        [
            "QueryRetrieveLevel=IMAGE",
            f"StudyInstanceUID={john[0].StudyInstanceUID}",
            f"SeriesInstanceUID={john[0].SeriesInstanceUID}",
            "SOPInstanceUID",
            "SOPClassUID",
            "InstanceNumber",
            "NumberOfFrames",
        ],
        tmp_path / "images",
    )

    assert sorted(s.SeriesInstanceUID for s in series) == sorted(
        ds.SeriesInstanceUID for ds in john
    )
    assert {s.Modality for s in series} == {"US"}
    assert [i.SOPInstanceUID for i in images] == [john[0].SOPInstanceUID]
    assert images[0].NumberOfFrames == 120


@pytest.mark.e2e
def test_a_wrong_level_is_refused(served: RunningAppliance, studies: dict) -> None:
    result = run_tool(
        [
            "findscu",
            "-v",
            "-S",
            "-aet",
            "FINDSCU",
            "-aec",
            "APPLIANCE",
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID",
            "127.0.0.1",
            str(served.dicom_port),
        ]
    )

    assert "DataSetDoesNotMatchSOPClass" in result.stdout + result.stderr


def _movescu(served: RunningAppliance, destination: str, study_uid: str) -> str:
    result = run_tool(
        [
            "movescu",
            "-S",
            "-aet",
            "MOVESCU",
            "-aec",
            "APPLIANCE",
            "-aem",
            destination,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_uid}",
            "127.0.0.1",
            str(served.dicom_port),
        ]
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@pytest.mark.e2e
def test_movescu_into_storescp_sends_files_as_stored(
    served: RunningAppliance, studies: dict, tmp_path: Path
) -> None:
    with storescp(tmp_path / "dest", "DESTASIS", "+xa") as port:
        register(served, "DESTASIS", port)
        _movescu(served, "DESTASIS", studies["john"][0].StudyInstanceUID)
    arrived = {str(ds.SOPInstanceUID): ds for ds in received(tmp_path / "dest")}

    john = studies["john"]
    assert set(arrived) == {str(ds.SOPInstanceUID) for ds in john}
    cine = arrived[str(john[0].SOPInstanceUID)]
    assert cine.file_meta.TransferSyntaxUID == JPEG_BASELINE
    assert cine.PixelData == john[0].PixelData
    assert arrived[str(john[1].SOPInstanceUID)].file_meta.TransferSyntaxUID == (
        JPEG_2000_LOSSLESS
    )
    assert str(cine.PatientName) == "DOE^JOHN"


@pytest.mark.e2e
def test_movescu_to_a_peer_without_jpeg_gets_it_decompressed(
    served: RunningAppliance, studies: dict, tmp_path: Path
) -> None:
    with storescp(tmp_path / "dest", "DESTPLAIN") as port:
        register(served, "DESTPLAIN", port)
        _movescu(served, "DESTPLAIN", studies["john"][0].StudyInstanceUID)
    arrived = received(tmp_path / "dest")

    assert len(arrived) == 2
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in arrived} <= UNCOMPRESSED
    cine = next(
        ds for ds in arrived if ds.SOPInstanceUID == studies["john"][0].SOPInstanceUID
    )
    assert cine.NumberOfFrames == 120 and cine.pixel_array.shape[0] == 120
    assert "Explicit VR Little Endian for DESTPLAIN (moved for MOVESCU" in served.log()


def _move_status(
    served: RunningAppliance, destination: str, identifier: Dataset
) -> int:
    ae = AE("MOVESCU")
    ae.add_requested_context(STUDY_ROOT_MOVE)
    assoc = ae.associate("127.0.0.1", served.dicom_port, ae_title="APPLIANCE")
    assert assoc.is_established
    try:
        statuses = [
            int(status.Status)
            for status, _ in assoc.send_c_move(identifier, destination, STUDY_ROOT_MOVE)
            if status
        ]
    finally:
        assoc.release()
    return statuses[-1]


@pytest.mark.e2e
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_moves_to_unknown_destinations_or_by_wildcard_are_refused(
    served: RunningAppliance, studies: dict, tmp_path: Path
) -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = studies["jane"][0].StudyInstanceUID
    register(served, "NOPORTDEST")

    assert _move_status(served, "NOBODY", identifier) == 0xA801
    assert _move_status(served, "NOPORTDEST", identifier) == 0xA801

    with storescp(tmp_path / "dest", "DESTWILD", "+xa") as port:
        register(served, "DESTWILD", port)
        identifier.StudyInstanceUID = ""
        assert _move_status(served, "DESTWILD", identifier) == 0xA900
        patient = Dataset()
        patient.QueryRetrieveLevel = "STUDY"
        patient.StudyInstanceUID = "1.2*"
        assert _move_status(served, "DESTWILD", patient) == 0xA900
    assert received(tmp_path / "dest") == []


def _getscu(served: RunningAppliance, out: Path, *flags: str, **keys: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "getscu",
        "-S",
        *flags,
        "-aet",
        "GETSCU",
        "-aec",
        "APPLIANCE",
        "-od",
        str(out),
    ]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}"]
    result = run_tool([*args, "127.0.0.1", str(served.dicom_port)])
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.e2e
def test_getscu_retrieves_a_study_as_stored_when_it_takes_jpeg(
    served: RunningAppliance, studies: dict, tmp_path: Path
) -> None:
    cine = studies["john"][0]

    _getscu(
        served,
        tmp_path,
        "+xy",
        QueryRetrieveLevel="IMAGE",
        StudyInstanceUID=cine.StudyInstanceUID,
        SeriesInstanceUID=cine.SeriesInstanceUID,
        SOPInstanceUID=cine.SOPInstanceUID,
    )
    arrived = received(tmp_path)

    assert [ds.SOPInstanceUID for ds in arrived] == [cine.SOPInstanceUID]
    assert arrived[0].file_meta.TransferSyntaxUID == JPEG_BASELINE
    assert arrived[0].PixelData == cine.PixelData


@pytest.mark.e2e
def test_getscu_retrieves_a_whole_patients_studies(
    served: RunningAppliance, studies: dict, tmp_path: Path
) -> None:
    _getscu(
        served,
        tmp_path,
        QueryRetrieveLevel="STUDY",
        StudyInstanceUID=studies["rita"][0].StudyInstanceUID,
    )

    arrived = received(tmp_path)

    assert [ds.SOPInstanceUID for ds in arrived] == [studies["rita"][0].SOPInstanceUID]
    assert str(arrived[0].PatientName) == "ROE^RITA"


@pytest.mark.e2e
def test_no_patient_data_in_the_log(served: RunningAppliance, studies: dict) -> None:
    log = served.log()

    assert "C-FIND STUDY from FINDSCU" in log and "C-MOVE from MOVESCU" in log
    for secret in ("DOE^JANE", "DOE^JOHN", "SHARED", "19800101", "ROE^RITA"):
        assert secret not in log


def test_index_reader_connection_is_closed(index: sqlite3.Connection) -> None:
    # find() registers its SQL function on the caller's connection only.
    with closing(sqlite3.connect(":memory:")) as other:
        with pytest.raises(sqlite3.OperationalError):
            other.execute("SELECT pn_key('x')")
