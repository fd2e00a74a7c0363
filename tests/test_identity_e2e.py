"""Patient identity end to end: the real process, real DICOM peers, the web.

A modality sends a patient twice, once with her name mistyped; a clinician
joins the two records on the web; DCMTK's findscu then finds one patient
with the right name, movescu sends the mistyped images out under the right
name (the stored files unchanged), a later mistyped image joins her record,
and all of it holds after ``appliance rebuild-index``.
"""

from __future__ import annotations

import html
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.conftest import RunningAppliance, sample_file
from tests.dicom_helpers import renamed_copy, send_datasets
from tests.dicom_services_helpers import findscu, received, register, run_tool, storescp
from tests.web_session import WebSession

PASSWORD = "correct horse battery"
SIGNED_IN = 302


def _send(appliance: RunningAppliance, name: str, study: Dataset | None) -> Dataset:
    dataset = renamed_copy(
        sample_file("US1_UNCR.dcm"),
        patient_id="P100",
        patient_name=name,
        birth_date="19850214",
        sex="F",
        new_study=study is None,
    )
    if study is not None:
        dataset.StudyInstanceUID = study.StudyInstanceUID
        dataset.SeriesInstanceUID = study.SeriesInstanceUID
    assert send_datasets(appliance.dicom_port, [dataset]) == [0x0000]
    return dataset


def _patients(appliance: RunningAppliance, out: Path) -> list[tuple[str, str, str]]:
    found = findscu(
        appliance,
        "-P",
        [
            "QueryRetrieveLevel=PATIENT",
            "PatientID=P100",
            "PatientName",
            "PatientBirthDate",
            "NumberOfPatientRelatedStudies",
        ],
        out,
    )
    return sorted(
        (
            str(ds.PatientName),
            ds.PatientBirthDate,
            str(ds.NumberOfPatientRelatedStudies),
        )
        for ds in found
    )


def _merge_on_the_web(appliance: RunningAppliance) -> None:
    web = WebSession(f"http://127.0.0.1:{appliance.http_port}")
    assert web.login("doc", PASSWORD).status == SIGNED_IN
    review = web.get("/patients/review")
    assert review.status == 200 and "DOE, JNAE" in review.text
    link = re.search(r'href="(/patients/merge\?[^"]+)"', review.text)
    assert link, review.text
    merge = html.unescape(link.group(1))
    form = web.get(merge).text
    # The first record is DOE^JANE (first seen), the second the typo.
    choices = {
        field: "first" for field in ("patient_id", "issuer", "birth_date", "sex")
    }
    tokens = dict(re.findall(r'name="(\w+_token)" type="hidden" value="([^"]+)"', form))
    reply = web.post_form(merge, {**tokens, **choices, "name": "first"})
    assert reply.status == 302, reply.text[:300]


@pytest.mark.e2e
def test_merge_on_the_web_then_find_move_and_rebuild(
    appliance: RunningAppliance, tmp_path: Path
) -> None:
    result = appliance.cli("user", "add", "doc", "--role", "clinician", stdin=PASSWORD)
    assert result.returncode == 0, result.stderr
    for peer in ("FINDSCU", "MOVESCU"):
        register(appliance, peer)
    first = _send(appliance, "DOE^JANE", None)
    typo = _send(appliance, "DOE^JNAE", None)
    assert len(_patients(appliance, tmp_path / "find0")) == 2

    _merge_on_the_web(appliance)

    assert _patients(appliance, tmp_path / "find1") == [("DOE^JANE", "19850214", "2")]
    studies = findscu(
        appliance,
        "-S",
        ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={typo.StudyInstanceUID}"]
        + ["PatientName", "PatientID"],
        tmp_path / "find2",
    )
    assert [str(ds.PatientName) for ds in studies] == ["DOE^JANE"]

    # C-MOVE sends the mistyped image under the chosen name; storage keeps it.
    with storescp(tmp_path / "dest", "DEST") as port:
        register(appliance, "DEST", port)
        moved = run_tool(
            ["movescu", "-S", "-aet", "MOVESCU", "-aec", "APPLIANCE", "-aem", "DEST"]
            + ["-k", "QueryRetrieveLevel=STUDY"]
            + ["-k", f"StudyInstanceUID={typo.StudyInstanceUID}"]
            + ["127.0.0.1", str(appliance.dicom_port)]
        )
        assert moved.returncode == 0, moved.stderr
    (arrived,) = received(tmp_path / "dest")
    assert str(arrived.PatientName) == "DOE^JANE"
    original = arrived.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert str(original.PatientName) == "DOE^JNAE"
    stored = [
        pydicom.dcmread(p, stop_before_pixels=True) for p in appliance.stored_files()
    ]
    assert sorted(str(ds.PatientName) for ds in stored) == ["DOE^JANE", "DOE^JNAE"]

    # The machine still has the typo; its next image joins her record.
    _send(appliance, "DOE^JNAE", first)
    assert _patients(appliance, tmp_path / "find3") == [("DOE^JANE", "19850214", "2")]

    # A rebuild from storage keeps the decision.
    assert appliance.stop() == 0
    rebuilt = appliance.cli("rebuild-index")
    assert rebuilt.returncode == 0, rebuilt.stderr + rebuilt.stdout
    appliance.start()
    assert _patients(appliance, tmp_path / "find4") == [("DOE^JANE", "19850214", "2")]
    with closing(sqlite3.connect(appliance.data_dir / "app.db")) as conn:
        actions = [row[0] for row in conn.execute("SELECT action FROM audit")]
    assert "identity-same-person" in actions


@pytest.mark.e2e
def test_a_modality_default_issuer_splits_id_spaces(
    appliance: RunningAppliance, tmp_path: Path
) -> None:
    added = appliance.cli(
        "modality", "add", "CLINIC_B", "--host", "127.0.0.1", "--issuer", "SITE-B"
    )
    assert added.returncode == 0, added.stderr
    register(appliance, "FINDSCU")
    _send(appliance, "DOE^JANE", None)
    other = renamed_copy(
        sample_file("US1_UNCR.dcm"),
        patient_id="P100",
        patient_name="DOE^JANE",
        birth_date="19850214",
        sex="F",
    )
    assert send_datasets(appliance.dicom_port, [other], calling_ae="CLINIC_B") == [0]

    found = findscu(
        appliance,
        "-P",
        ["QueryRetrieveLevel=PATIENT", "PatientID=P100", "IssuerOfPatientID"],
        tmp_path / "find",
    )
    assert sorted(str(ds.get("IssuerOfPatientID", "")) for ds in found) == [
        "",
        "SITE-B",
    ]
