"""A full disk and a disk gone read-only: failure statuses, then recovery.

The data folder lives on a small tmpfs of its own (so this runs as root
only, as CI does). A store the disk cannot take answers 0xA700 (out of
resources) and leaves no partial file; once space returns, or the file
system is writable again, the next store succeeds without a restart, and
the index still matches ``storage/``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames

from tests.conftest import RunningAppliance, make_appliance
from tests.dicom_helpers import echo, renamed_copy, send_datasets
from tests.reliability.support import (
    assert_index_matches_storage,
    assert_kept,
    wait_until_settled,
)

pytestmark = pytest.mark.e2e

OUT_OF_RESOURCES = 0xA700


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 24 MB file system (tmpfs), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    _mount("-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point))
    try:
        yield mount_point
    finally:
        # A read-only bind mount a failed test left on top goes first
        for _ in range(3):
            if not os.path.ismount(mount_point):
                break
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def served(small_disk: Path) -> Iterator[RunningAppliance]:
    """An appliance whose whole data folder is on the small disk."""
    appliance = make_appliance(small_disk / "data")
    appliance.start()
    try:
        wait_until_settled(appliance)
        yield appliance
    finally:
        appliance.kill()


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def _clip(path: Path, repeat: int) -> pydicom.Dataset:
    clip = renamed_copy(path)
    frames = list(generate_frames(clip.PixelData, number_of_frames=clip.NumberOfFrames))
    clip.PixelData = encapsulate(frames * repeat)
    clip.NumberOfFrames = len(frames) * repeat
    return clip


def _fill(folder: Path, keep_free: int) -> Path:
    """Write a ballast file until at most `keep_free` bytes are left."""
    ballast = folder / "ballast"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with ballast.open("wb") as stream:
        try:
            stream.write(bytes(max(0, free - keep_free)))
        except OSError:
            pass
    return ballast


def test_a_full_disk_answers_a700_and_recovers_when_space_returns(
    served: RunningAppliance, small_disk: Path, ultrasound_files: dict[str, Path]
) -> None:
    kept = [renamed_copy(ultrasound_files["ge_rgb"])]
    assert send_datasets(served.dicom_port, kept) == [0x0000]

    # A clip bigger than what is left, then a disk with no room at all
    too_big = _clip(ultrasound_files["sonosite_cine"], repeat=5)
    assert send_datasets(served.dicom_port, [too_big]) == [OUT_OF_RESOURCES]
    ballast = _fill(small_disk, keep_free=64 * 1024)
    small = renamed_copy(ultrasound_files["aloka_palette"])
    assert send_datasets(served.dicom_port, [small]) == [OUT_OF_RESOURCES]
    assert_index_matches_storage(served)
    assert echo(served.dicom_port, "PYNETDICOM") == 0x0000

    # Room again: the very next store succeeds, no restart needed
    ballast.unlink()
    again = renamed_copy(ultrasound_files["aloka_palette"])
    assert send_datasets(served.dicom_port, [again]) == [0x0000]
    assert_kept(served, [str(kept[0].SOPInstanceUID), str(again.SOPInstanceUID)])
    assert_index_matches_storage(served)


def test_a_read_only_disk_answers_a700_and_recovers_when_writable(
    served: RunningAppliance, small_disk: Path, ultrasound_files: dict[str, Path]
) -> None:
    before = renamed_copy(ultrasound_files["ge_rgb"])
    assert send_datasets(served.dicom_port, [before]) == [0x0000]

    # `mount -o remount,ro` refuses while the databases are open for
    # writing; a read-only bind mount over the folder makes every new file
    # and rename fail with EROFS, as on a disk the kernel remounted
    # read-only, while open files stay as they were.
    _mount("--bind", "-o", "ro", str(small_disk), str(small_disk))
    try:
        refused = renamed_copy(ultrasound_files["aloka_palette"])
        assert send_datasets(served.dicom_port, [refused]) == [OUT_OF_RESOURCES]
        assert echo(served.dicom_port, "PYNETDICOM") == 0x0000
    finally:
        subprocess.run(["umount", "-l", str(small_disk)], check=True)

    after = renamed_copy(ultrasound_files["philips_palette"])
    assert send_datasets(served.dicom_port, [after]) == [0x0000]
    assert_kept(served, [str(before.SOPInstanceUID), str(after.SOPInstanceUID)])
    assert str(refused.SOPInstanceUID) not in {
        path.name.rsplit(".", 2)[0] for path in served.stored_files()
    }
    assert_index_matches_storage(served)
