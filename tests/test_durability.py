"""What is acknowledged is kept: disk full, write errors, kill -9, stops."""

from __future__ import annotations

import os
import random
import resource
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames

from appliance.storage import hash_file
from tests.conftest import RunningAppliance, make_appliance
from tests.dicom_helpers import echo, renamed_copy, send_datasets

pytestmark = pytest.mark.e2e


def _clip(path: Path, repeat: int) -> pydicom.Dataset:
    """A longer cine clip made from the real SonoSite clip's JPEG frames."""
    clip = renamed_copy(path)
    frames = list(generate_frames(clip.PixelData, number_of_frames=clip.NumberOfFrames))
    clip.PixelData = encapsulate(frames * repeat)
    clip.NumberOfFrames = len(frames) * repeat
    return clip


def _leftovers(appliance: RunningAppliance) -> list[Path]:
    return list((appliance.data_dir / "incoming").iterdir())


def _indexed_uids(appliance: RunningAppliance) -> set[str]:
    with appliance.index() as conn:
        return {row[0] for row in conn.execute("SELECT sop_uid FROM instances")}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 12 MB file system (tmpfs), so the disk really fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount_point)],
        check=True,
    )
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_answers_a700_and_keeps_serving(
    small_disk: Path, ultrasound_files: dict[str, Path]
) -> None:
    appliance = make_appliance(small_disk / "data")
    appliance.start()
    try:
        before = renamed_copy(ultrasound_files["ge_rgb"])
        too_big = _clip(ultrasound_files["sonosite_cine"], repeat=4)
        after = renamed_copy(ultrasound_files["aloka_palette"])

        assert send_datasets(appliance.dicom_port, [before]) == [0x0000]
        assert send_datasets(appliance.dicom_port, [too_big]) == [0xA700]
        assert _leftovers(appliance) == []
        assert send_datasets(appliance.dicom_port, [after]) == [0x0000]

        assert _indexed_uids(appliance) == {before.SOPInstanceUID, after.SOPInstanceUID}
        assert len(appliance.stored_files()) == 2
        assert echo(appliance.dicom_port, "PYNETDICOM") == 0x0000
    finally:
        appliance.stop()


def _limit_file_size() -> None:
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG:
    # a real I/O error from the kernel, not a mock.
    limit = 4 << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_write_error_answers_a700_and_leaves_no_partial_file(
    tmp_path: Path, ultrasound_files: dict[str, Path]
) -> None:
    appliance = make_appliance(tmp_path / "data")
    appliance.start_options = {"preexec_fn": _limit_file_size}
    appliance.start()
    try:
        small = renamed_copy(ultrasound_files["ge_rgb"])
        large = _clip(ultrasound_files["sonosite_cine"], repeat=1)

        assert send_datasets(appliance.dicom_port, [large, small]) == [0xA700, 0]
        assert _leftovers(appliance) == []
        assert _indexed_uids(appliance) == {small.SOPInstanceUID}
    finally:
        appliance.stop()


def _send_until_stopped(
    appliance: RunningAppliance,
    datasets: list[pydicom.Dataset],
    acknowledged: list[str],
) -> None:
    # One association per instance, as some modalities do; stops on refusal.
    for dataset in datasets:
        try:
            statuses = send_datasets(appliance.dicom_port, [dataset])
        except Exception:
            return
        if statuses != [0x0000]:
            return
        acknowledged.append(dataset.SOPInstanceUID)


def test_kill_9_mid_send_loses_nothing_acknowledged(
    tmp_path: Path, ultrasound_files: dict[str, Path]
) -> None:
    appliance = make_appliance(tmp_path / "data")
    sources = [
        ultrasound_files[key] for key in ("ge_rgb", "aloka_palette", "sonosite_cine")
    ]
    chooser = random.Random(20261203)
    all_acknowledged: list[str] = []

    for _round in range(3):
        appliance.start()
        datasets = [renamed_copy(chooser.choice(sources)) for _ in range(40)]
        acknowledged: list[str] = []
        sender = threading.Thread(
            target=_send_until_stopped, args=(appliance, datasets, acknowledged)
        )
        sender.start()
        time.sleep(chooser.uniform(0.4, 1.5))
        appliance.kill()
        sender.join(timeout=60)
        all_acknowledged.extend(acknowledged)

    appliance.start()
    try:
        assert all_acknowledged, "nothing was acknowledged before the kills"
        with appliance.index() as conn:
            rows = {
                row["sop_uid"]: row
                for row in conn.execute(
                    "SELECT sop_uid, file_path, sha256 FROM instances"
                )
            }
        for uid in all_acknowledged:
            path = appliance.data_dir / "storage" / rows[uid]["file_path"]
            assert hash_file(path) == rows[uid]["sha256"]
            assert pydicom.dcmread(path).SOPInstanceUID == uid
        assert _leftovers(appliance) == []
    finally:
        appliance.stop()


def test_a_stop_past_the_grace_period_tears_nothing(
    tmp_path: Path, ultrasound_files: dict[str, Path]
) -> None:
    appliance = make_appliance(
        tmp_path / "data", extra_env={"APPLIANCE_SHUTDOWN_GRACE": "0"}
    )
    appliance.start()
    clip = _clip(ultrasound_files["sonosite_cine"], repeat=60)
    statuses: list[int | None] = []
    sender = threading.Thread(
        target=lambda: statuses.extend(send_datasets(appliance.dicom_port, [clip]))
    )
    sender.start()
    incoming = appliance.data_dir / "incoming"
    deadline = time.monotonic() + 30
    while not any(incoming.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.01)

    assert appliance.stop() == 0
    sender.join(timeout=60)

    assert statuses in ([None], [0xA700], [0x0000])
    assert (clip.SOPInstanceUID in _indexed_uids(appliance)) == (statuses == [0])
    assert _leftovers(appliance) == []
    if statuses != [0]:
        assert appliance.stored_files() == []
