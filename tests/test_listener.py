"""End to end: the real ``appliance serve`` process and real DICOM clients."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest

from tests.conftest import RunningAppliance, sample_file
from tests.dicom_helpers import (
    dataset_without_meta,
    echo,
    renamed_copy,
    send_datasets,
    send_files,
    storescu,
)

pytestmark = pytest.mark.e2e

# Beyond ultrasound: the other transfer syntaxes the issue lists.
OTHER_SYNTAX_FILES = [
    "SC_rgb_rle.dcm",  # RLE Lossless
    "JPEG-LL.dcm",  # JPEG Lossless SV1
    "MR_small_bigendian.dcm",  # Explicit VR Big Endian
    "image_dfl.dcm",  # Deflated Explicit VR Little Endian
    "emri_small_jpeg_ls_lossless.dcm",  # JPEG-LS Lossless
    "JPEG2000_UNC.dcm",  # JPEG 2000
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline (secondary capture)
]


def _index_row(appliance: RunningAppliance, sop_uid: str) -> list:
    with appliance.index() as conn:
        return conn.execute(
            "SELECT * FROM instances WHERE sop_uid = ?", (sop_uid,)
        ).fetchall()


def _assert_stored_intact(appliance: RunningAppliance, original: Path) -> None:
    source = pydicom.dcmread(original)
    rows = _index_row(appliance, source.SOPInstanceUID)
    assert len(rows) == 1, f"{original.name} not indexed once"
    stored_path = appliance.data_dir / "storage" / rows[0]["file_path"]
    stored = pydicom.dcmread(stored_path)

    # A sender may convert between uncompressed syntaxes (storescu prefers
    # explicit VR); compressed data must arrive exactly as encoded.
    syntax = source.file_meta.TransferSyntaxUID
    if syntax.is_compressed:
        assert stored.file_meta.TransferSyntaxUID == syntax
    else:
        assert not stored.file_meta.TransferSyntaxUID.is_compressed
    assert stored.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    assert dataset_without_meta(stored_path) == dataset_without_meta(original)


def test_echo_answers_registered_modalities(appliance: RunningAppliance) -> None:
    result = subprocess.run(
        [
            "echoscu",
            "-aet",
            "STORESCU",
            "-aec",
            "APPLIANCE",
            "127.0.0.1",
            str(appliance.dicom_port),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    assert echo(appliance.dicom_port, "PYNETDICOM") == 0x0000


def test_unknown_ae_is_rejected_at_association_and_logged(
    appliance: RunningAppliance, dcmtk: None
) -> None:
    result = subprocess.run(
        [
            "echoscu",
            "-aet",
            "INTRUDER",
            "-aec",
            "APPLIANCE",
            "127.0.0.1",
            str(appliance.dicom_port),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stderr
    assert echo(appliance.dicom_port, "INTRUDER") is None
    time.sleep(0.3)
    assert "Association rejected: calling AE 'INTRUDER'" in appliance.log()


def test_registration_and_host_take_effect_without_restart(
    appliance: RunningAppliance,
) -> None:
    assert (
        appliance.cli("modality", "add", "ELSEWHERE", "--host", "192.0.2.7").returncode
        == 0
    )
    assert (
        appliance.cli("modality", "add", "LOCALHOST", "--host", "127.0.0.1").returncode
        == 0
    )

    assert echo(appliance.dicom_port, "ELSEWHERE") is None
    assert echo(appliance.dicom_port, "LOCALHOST") == 0x0000

    assert appliance.cli("modality", "remove", "LOCALHOST").returncode == 0
    assert echo(appliance.dicom_port, "LOCALHOST") is None


def test_storescu_stores_every_vendor_ultrasound_file_intact(
    appliance: RunningAppliance, ultrasound_files: dict[str, Path], dcmtk: None
) -> None:
    for path in ultrasound_files.values():
        result = storescu(appliance.dicom_port, path)
        assert result.returncode == 0, f"{path.name}: {result.stderr}"

    for path in ultrasound_files.values():
        _assert_stored_intact(appliance, path)
    assert list((appliance.data_dir / "incoming").iterdir()) == []


def test_pynetdicom_stores_every_listed_transfer_syntax(
    appliance: RunningAppliance,
) -> None:
    paths = [sample_file(name) for name in OTHER_SYNTAX_FILES]

    statuses = send_files(appliance.dicom_port, paths)

    assert statuses == [0x0000] * len(paths)
    for path in paths:
        _assert_stored_intact(appliance, path)


def test_private_and_unknown_storage_classes_are_accepted(
    appliance: RunningAppliance, ultrasound_files: dict[str, Path]
) -> None:
    # An Acuson-style private report class and a not-yet-known public one.
    private = renamed_copy(ultrasound_files["ge_rgb"])
    private.SOPClassUID = "1.2.840.113680.1.0.7.9"
    private.file_meta.MediaStorageSOPClassUID = private.SOPClassUID
    unknown = renamed_copy(ultrasound_files["ge_rgb"])
    unknown.SOPClassUID = "1.2.840.10008.5.1.4.1.1.999"
    unknown.file_meta.MediaStorageSOPClassUID = unknown.SOPClassUID

    assert send_datasets(appliance.dicom_port, [private, unknown]) == [0, 0]
    for dataset in (private, unknown):
        row = _index_row(appliance, dataset.SOPInstanceUID)[0]
        assert row["sop_class_uid"] == dataset.SOPClassUID


def test_identical_resend_succeeds_and_stores_nothing_twice(
    appliance: RunningAppliance, ultrasound_files: dict[str, Path], dcmtk: None
) -> None:
    by_storescu = ultrasound_files["aloka_palette"]
    by_pynetdicom = ultrasound_files["philips_palette"]
    for _ in range(2):
        assert storescu(appliance.dicom_port, by_storescu).returncode == 0
        assert send_files(appliance.dicom_port, [by_pynetdicom]) == [0x0000]

    assert len(appliance.stored_files()) == 2
    for path in (by_storescu, by_pynetdicom):
        assert len(_index_row(appliance, pydicom.dcmread(path).SOPInstanceUID)) == 1
    assert appliance.log().count("identical re-send") == 2


def test_same_uid_with_other_content_keeps_both_and_flags_them(
    appliance: RunningAppliance, ultrasound_files: dict[str, Path]
) -> None:
    first = renamed_copy(ultrasound_files["ge_rgb"])
    second = pydicom.dcmread(ultrasound_files["ge_rgb"])
    second.StudyInstanceUID = first.StudyInstanceUID
    second.SeriesInstanceUID = first.SeriesInstanceUID
    second.SOPInstanceUID = first.SOPInstanceUID
    second.StudyDescription = "corrected on the modality"

    assert send_datasets(appliance.dicom_port, [first]) == [0]
    assert send_datasets(appliance.dicom_port, [second]) == [0]

    rows = _index_row(appliance, first.SOPInstanceUID)
    assert len(rows) == 2
    assert {row["has_differing_copy"] for row in rows} == {1}
    assert len({row["file_path"] for row in rows}) == 2
    assert len(appliance.stored_files()) == 2


@pytest.mark.parametrize("second", [{"birth_date": "19700101"}, {"sex": "M"}])
def test_same_patient_id_other_birth_date_or_sex_is_two_patients(
    appliance: RunningAppliance, ultrasound_files: dict[str, Path], second: dict
) -> None:
    person = {
        "patient_id": "4711",
        "patient_name": "Doe^Jane",
        "birth_date": "19900101",
        "sex": "F",
    }
    obstetric = renamed_copy(ultrasound_files["philips_palette"], **person)
    other = renamed_copy(ultrasound_files["ge_rgb"], **{**person, **second})

    assert send_datasets(appliance.dicom_port, [obstetric, other]) == [0, 0]

    with appliance.index() as conn:
        patients = conn.execute(
            "SELECT * FROM patients WHERE patient_id = '4711'"
        ).fetchall()
        conflicts = conn.execute("SELECT * FROM identity_conflicts").fetchall()
    assert len(patients) == 2
    assert len(conflicts) == 1


def test_an_unreadable_data_set_is_refused_and_nothing_is_kept(
    appliance: RunningAppliance, ultrasound_files: dict[str, Path]
) -> None:
    broken = renamed_copy(ultrasound_files["ge_rgb"])
    del broken.StudyInstanceUID

    status = send_datasets(appliance.dicom_port, [broken])[0]

    assert status is not None and 0xC000 <= status <= 0xCFFF
    assert appliance.stored_files() == []
    assert list((appliance.data_dir / "incoming").iterdir()) == []
    assert echo(appliance.dicom_port, "PYNETDICOM") == 0x0000


def test_twelve_simultaneous_associations(
    appliance: RunningAppliance, ultrasound_files: dict[str, Path]
) -> None:
    results: list[list[int | None]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(12)

    def sender() -> None:
        datasets = [renamed_copy(ultrasound_files["aloka_palette"]) for _ in range(3)]
        barrier.wait(timeout=30)
        statuses = send_datasets(appliance.dicom_port, datasets)
        with lock:
            results.append(statuses)

    threads = [threading.Thread(target=sender) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert results == [[0, 0, 0]] * 12
    with appliance.index() as conn:
        assert conn.execute("SELECT count(*) FROM instances").fetchone()[0] == 36


def test_malformed_bytes_do_not_kill_the_listener(appliance: RunningAppliance) -> None:
    for payload in (
        b"\x00" * 10,
        b"GET / HTTP/1.0\r\n\r\n",
        b"\x01\x00" + b"\xff" * 64,
    ):
        with socket.create_connection(("127.0.0.1", appliance.dicom_port), 5) as sock:
            sock.sendall(payload)
            sock.settimeout(5)
            try:
                sock.recv(1024)
            except (TimeoutError, ConnectionResetError):
                pass

    assert echo(appliance.dicom_port, "PYNETDICOM") == 0x0000
    assert appliance.process is not None and appliance.process.poll() is None


def test_logs_name_no_patient(
    appliance: RunningAppliance, ultrasound_files: dict[str, Path]
) -> None:
    dataset = renamed_copy(
        ultrasound_files["ge_rgb"],
        patient_id="PID-SECRET-991",
        patient_name="Secretname^Harriet",
        birth_date="19451231",
        sex="F",
    )
    broken = renamed_copy(
        ultrasound_files["ge_rgb"],
        patient_id="PID-SECRET-991",
        patient_name="Secretname^Harriet",
    )
    del broken.SeriesInstanceUID
    # Invalid values make pydicom warn as it reads them, quoting the value.
    odd = renamed_copy(
        ultrasound_files["aloka_palette"],
        patient_id="LONGSECRETID" * 6,
        birth_date="SECRETDOB",
        sex="secretsex",
    )

    send_datasets(appliance.dicom_port, [dataset, broken, odd])
    appliance.stop()

    log = appliance.log()
    assert dataset.SOPInstanceUID in log and odd.SOPInstanceUID in log
    secrets = ("PID-SECRET-991", "Secretname", "Harriet", "19451231", "SECRET")
    for secret in secrets:
        assert secret not in log


def test_sigterm_lets_a_store_in_flight_finish(
    appliance: RunningAppliance, ultrasound_files: dict[str, Path], tmp_path: Path
) -> None:
    # A large clip: the stop arrives while its bytes are still on the wire.
    clip = _large_clip(ultrasound_files["sonosite_cine"], repeat=40)
    statuses: list[int | None] = []
    sender = threading.Thread(
        target=lambda: statuses.extend(send_datasets(appliance.dicom_port, [clip]))
    )
    sender.start()
    _wait_for_incoming(appliance)

    assert appliance.stop() == 0
    sender.join(timeout=60)

    assert statuses in ([0x0000], [None], [0xA700])
    stored = _index_row(appliance, clip.SOPInstanceUID)
    assert (statuses == [0x0000]) == bool(stored)
    assert list((appliance.data_dir / "incoming").iterdir()) == []
    assert "Stopped" in appliance.log()


def _large_clip(path: Path, repeat: int) -> pydicom.Dataset:
    from pydicom.encaps import encapsulate, generate_frames

    clip = renamed_copy(path)
    frames = list(generate_frames(clip.PixelData, number_of_frames=clip.NumberOfFrames))
    clip.PixelData = encapsulate(frames * repeat)
    clip.NumberOfFrames = len(frames) * repeat
    return clip


def _wait_for_incoming(appliance: RunningAppliance, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    incoming = appliance.data_dir / "incoming"
    while time.monotonic() < deadline:
        if any(incoming.iterdir()):
            return
        time.sleep(0.01)
    raise AssertionError("the clip never started arriving")
