"""Orthanc 1.10 (Debian's ``orthanc``) as a peer, driven through its REST API.

Orthanc runs as a subprocess with its own JSON configuration in the test's
folder, on free loopback ports; it queries the appliance, retrieves a study
from it by C-MOVE, and sends a study to it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.conftest import RunningAppliance, free_port, make_appliance, sample_file
from tests.dicom_helpers import renamed_copy, send_datasets
from tests.dicom_services_helpers import register

pytestmark = pytest.mark.e2e

START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 60.0


@dataclass
class Orthanc:
    """A running Orthanc and how to reach its REST API."""

    http_port: int
    dicom_port: int
    log_path: Path

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None
        if isinstance(body, bytes):
            data = body
        elif body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method
        )
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            return json.loads(response.read() or b"null")


def _config(folder: Path, http_port: int, dicom_port: int, appliance_port: int) -> Path:
    config = {
        "Name": "orthanc-peer",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "Plugins": [],
        "DicomModalities": {"appliance": ["APPLIANCE", "127.0.0.1", appliance_port]},
        "DicomScuTimeout": 30,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAppliance]:
    running = make_appliance(tmp_path_factory.mktemp("orthanc-app") / "data")
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def orthanc(
    served: RunningAppliance, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Orthanc]:
    binary = shutil.which("Orthanc")
    assert binary, "Orthanc missing; run installer/dev-setup.sh --test"
    folder = tmp_path_factory.mktemp("orthanc")
    peer = Orthanc(free_port(), free_port(), folder / "orthanc.log")
    config = _config(folder, peer.http_port, peer.dicom_port, served.dicom_port)
    register(served, "ORTHANC", peer.dicom_port)

    with peer.log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=folder
        )
    try:
        _wait_ready(peer, process)
        yield peer
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_ready(peer: Orthanc, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited:\n{peer.log_path.read_text()}")
        try:
            peer.call("GET", "/system")
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"Orthanc not ready:\n{peer.log_path.read_text()}")


@pytest.fixture(scope="module")
def studies(served: RunningAppliance) -> dict[str, Dataset]:
    """Two people who share an ID, each with a study in the appliance."""
    made = {
        name: renamed_copy(
            sample_file(source),
            patient_id="SHARED-7",
            patient_name=person,
            birth_date=birth,
            sex=sex,
        )
        for name, source, person, birth, sex in (
            ("anna", "US1_UNCR.dcm", "ROE^ANNA", "19900101", "F"),
            ("bert", "color3d_jpeg_baseline.dcm", "ROE^BERT", "19600606", "M"),
        )
    }
    assert send_datasets(served.dicom_port, list(made.values())) == [0, 0]
    return made


def _query(orthanc: Orthanc, level: str, query: dict[str, str]) -> list[dict]:
    created = orthanc.call(
        "POST", "/modalities/appliance/query", {"Level": level, "Query": query}
    )
    answers = orthanc.call("GET", f"/queries/{created['ID']}/answers")
    return [
        orthanc.call("GET", f"/queries/{created['ID']}/answers/{a}/content?simplify")
        for a in answers
    ]


def test_orthanc_queries_the_appliance_and_tells_people_apart(
    orthanc: Orthanc, studies: dict[str, Dataset]
) -> None:
    found = _query(
        orthanc,
        "Study",
        {
            "PatientID": "SHARED-7",
            "PatientName": "",
            "PatientSex": "",
            "StudyInstanceUID": "",
            "ModalitiesInStudy": "US",
        },
    )

    by_uid = {answer["StudyInstanceUID"]: answer for answer in found}
    assert set(by_uid) == {ds.StudyInstanceUID for ds in studies.values()}
    assert by_uid[studies["anna"].StudyInstanceUID]["PatientName"] == "ROE^ANNA"
    assert by_uid[studies["bert"].StudyInstanceUID]["PatientSex"] == "M"

    patients = _query(orthanc, "Patient", {"PatientID": "SHARED-7", "PatientName": ""})
    assert sorted(p["PatientName"] for p in patients) == ["ROE^ANNA", "ROE^BERT"]


def test_orthanc_retrieves_a_study_by_c_move(
    orthanc: Orthanc, studies: dict[str, Dataset]
) -> None:
    cine = studies["bert"]

    orthanc.call(
        "POST",
        "/modalities/appliance/move",
        {
            "Level": "Study",
            "Resources": [{"StudyInstanceUID": cine.StudyInstanceUID}],
            "TargetAet": "ORTHANC",
        },
    )

    found = orthanc.call(
        "POST",
        "/tools/find",
        {"Level": "Instance", "Query": {"SOPInstanceUID": cine.SOPInstanceUID}},
    )
    assert len(found) == 1
    tags = orthanc.call("GET", f"/instances/{found[0]}/metadata?expand")
    assert tags["TransferSyntax"] == "1.2.840.10008.1.2.4.50"  # as stored


def test_orthanc_sends_a_study_to_the_appliance(
    orthanc: Orthanc, served: RunningAppliance, tmp_path: Path
) -> None:
    outside = renamed_copy(sample_file("OBXXXX1A.dcm"), patient_id="FROM-ORTHANC")
    path = tmp_path / "outside.dcm"
    outside.save_as(path)
    uploaded = orthanc.call("POST", "/instances", path.read_bytes())

    orthanc.call(
        "POST",
        "/modalities/appliance/store",
        {"Resources": [uploaded["ParentStudy"]], "Synchronous": True},
    )

    with served.index() as conn:
        rows = conn.execute(
            "SELECT file_path FROM instances WHERE sop_uid = ?",
            (outside.SOPInstanceUID,),
        ).fetchall()
    assert len(rows) == 1
    stored = pydicom.dcmread(served.data_dir / "storage" / rows[0]["file_path"])
    assert stored.StudyInstanceUID == outside.StudyInstanceUID
    assert "C-STORE from ORTHANC" in served.log()
