"""Restoring while serving: the wizard's engine and the service's switch.

An appliance runs in this process on real ports. A study is backed up, a
second one arrives after the backup, and the snapshot is verified and
restored through :class:`appliance.restoring.RestoreWizard`. The appliance
must then serve the restored data (the first study only), keep the replaced
folder aside with the second study in it, and go on receiving.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from appliance.restoring import NotVerifiedError, Phase, RestoreWizard
from appliance.service import Appliance
from appliance.state import open_state
from backup.snapshots import list_snapshots
from tests.backup_helpers import flip_byte
from tests.conftest import sample_file
from tests.dicom_helpers import renamed_copy, send_datasets
from tests.in_process import served_here

SUCCESS = 0x0000
WAIT_SECONDS = 120


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Appliance]:
    """An appliance in this process, with a backup folder; stopped after."""
    target = tmp_path / "backups"
    target.mkdir()
    with served_here(tmp_path / "data", backup_dir=str(target)) as appliance:
        yield appliance


def send_new_study(appliance: Appliance) -> str:
    """C-STORE a fresh copy of a vendor file; return its study UID."""
    dataset = renamed_copy(sample_file("US1_UNCR.dcm"), patient_id="RESTORE1")
    port = appliance.settings.dicom_port
    assert send_datasets(port, [dataset]) == [SUCCESS]
    return str(dataset.StudyInstanceUID)


def indexed_studies(data_dir: Path) -> set[str]:
    """The study UIDs in a data folder's index."""
    uri = f"file:{data_dir / 'index.db'}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        rows = conn.execute("SELECT study_uid FROM studies").fetchall()
    return {row[0] for row in rows}


def verified(wizard: RestoreWizard, name: str) -> None:
    """Verify snapshot `name` and wait until it is verified."""
    wizard.start_verify(name, "owner")
    wizard.wait(WAIT_SECONDS)
    assert wizard.status().phase == Phase.VERIFIED, wizard.status().message


def test_a_restore_switches_to_the_backup_and_keeps_receiving(
    served: Appliance,
) -> None:
    data_dir = served.settings.data_dir
    backed_up = send_new_study(served)
    result = served.backups.run("test")
    assert result is not None and result.ok, result
    after_backup = send_new_study(served)
    [snapshot] = list_snapshots(served.settings.backup_dir)

    verified(served.restore, snapshot.name)
    served.restore.start_restore(snapshot.name, "owner")
    served.restore.wait(WAIT_SECONDS)

    status = served.restore.status()
    assert status.phase == Phase.DONE, status.message
    assert status.moved_aside is not None and status.moved_aside.is_dir()
    assert indexed_studies(data_dir) == {backed_up}
    assert after_backup in indexed_studies(status.moved_aside)
    received_after = send_new_study(served)
    assert indexed_studies(data_dir) == {backed_up, received_after}
    with closing(open_state(data_dir / "app.db")) as conn:
        actions = [row[0] for row in conn.execute("SELECT action FROM audit")]
    assert "restore" in actions


def test_a_snapshot_must_be_verified_just_before_it_is_restored(
    served: Appliance,
) -> None:
    send_new_study(served)
    assert served.backups.run("test").ok  # type: ignore[union-attr]
    [snapshot] = list_snapshots(served.settings.backup_dir)

    with pytest.raises(NotVerifiedError):
        served.restore.start_restore(snapshot.name, "owner")

    assert served.restore.status().phase == Phase.IDLE


def test_a_damaged_snapshot_is_caught_and_cannot_be_restored(
    served: Appliance,
) -> None:
    study = send_new_study(served)
    assert served.backups.run("test").ok  # type: ignore[union-attr]
    [snapshot] = list_snapshots(served.settings.backup_dir)
    flip_byte(next((snapshot.path / "storage").rglob("*.dcm")))

    served.restore.start_verify(snapshot.name, "owner")
    served.restore.wait(WAIT_SECONDS)

    assert served.restore.status().phase == Phase.DAMAGED
    with pytest.raises(NotVerifiedError):
        served.restore.start_restore(snapshot.name, "owner")
    assert indexed_studies(served.settings.data_dir) == {study}


def test_a_name_that_is_not_a_snapshot_is_refused(served: Appliance) -> None:
    for name in ("../data", "/etc", "latest", "nothing"):
        with pytest.raises(Exception, match="no complete snapshot"):
            served.restore.start_verify(name, "owner")
