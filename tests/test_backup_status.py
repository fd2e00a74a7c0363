"""The status the admin page and the banner show, and the history behind it."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from backup import history, list_snapshots, status, target
from backup.job import BackupJob
from backup.lock import TargetLock
from backup.retention import Retention
from tests.backup_helpers import backup, make_data_dir

NOW = datetime(2024, 6, 12, 9, 0).astimezone()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return make_data_dir(tmp_path, files=4)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "backups"
    path.mkdir()
    return path


def test_backups_off_is_a_warning(data_dir: Path) -> None:
    found = status.summary(None, data_dir / "app.db", backup_time="02:30", now=NOW)

    assert not found.enabled and found.target_state == "off"
    assert found.next_run is None
    assert found.warnings == (
        "Backups are off: no backup folder is set (setting backup_dir).",
    )


def test_no_backup_yet_is_a_warning(data_dir: Path, folder: Path) -> None:
    found = status.summary(folder, data_dir / "app.db", now=NOW)

    assert found.target_state == "ok" and found.last_success is None
    assert found.warnings == ("No backup has completed yet.",)


def test_a_fresh_backup_gives_no_warning(data_dir: Path, folder: Path) -> None:
    result = backup(data_dir, folder, now=NOW - timedelta(hours=6))
    history.record_run(data_dir / "app.db", result)

    found = status.summary(
        folder, data_dir / "app.db", backup_time="02:30", data_dir=data_dir, now=NOW
    )

    assert found.warnings == ()
    assert found.last_snapshot == result.snapshot
    assert found.last_size_bytes == result.bytes
    assert found.last_success_age is not None
    assert timedelta(hours=5) < found.last_success_age < timedelta(hours=7)
    assert found.next_run == datetime(2024, 6, 13, 2, 30).astimezone()
    assert found.free_bytes and found.total_bytes
    assert [s.name for s in found.snapshots] == [result.snapshot]
    assert found.last_run is not None and found.last_run.ok
    assert any("same disk" in note for note in found.notes)


def test_a_backup_older_than_36_hours_is_a_warning(
    data_dir: Path, folder: Path
) -> None:
    backup(data_dir, folder, now=NOW - timedelta(hours=37))

    found = status.summary(folder, data_dir / "app.db", now=NOW)

    assert found.warnings == (
        f"The last complete backup is 37 hours old "
        f"({NOW - timedelta(hours=37):%Y-%m-%d %H:%M}).",
    )
    assert not status.summary(
        folder, data_dir / "app.db", now=NOW - timedelta(hours=2)
    ).warnings


def test_the_history_outlives_an_unplugged_disk(
    data_dir: Path, folder: Path, tmp_path: Path
) -> None:
    result = backup(data_dir, folder, now=NOW - timedelta(hours=1))
    history.record_run(data_dir / "app.db", result)

    found = status.summary(tmp_path / "unplugged", data_dir / "app.db", now=NOW)

    assert found.last_snapshot == result.snapshot
    assert found.target_state == "missing"
    assert len(found.warnings) == 1 and "is missing" in found.warnings[0]


def test_a_failed_run_is_the_last_run(data_dir: Path, tmp_path: Path) -> None:
    failed = backup(data_dir, tmp_path / "nowhere", now=NOW)
    history.record_run(data_dir / "app.db", failed)

    found = status.summary(tmp_path / "nowhere", data_dir / "app.db", now=NOW)

    assert found.last_run is not None and not found.last_run.ok
    assert "does not exist" in found.last_run.error
    assert history.last_success(data_dir / "app.db") is None


def test_a_nearly_full_disk_is_a_warning(
    data_dir: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup(data_dir, folder, now=NOW)
    monkeypatch.setattr(
        target, "space", lambda _path: target.Space(free=900_000_000, total=10**12)
    )

    found = status.summary(folder, data_dir / "app.db", now=NOW)

    assert found.target_state == "nearly full"
    assert found.warnings == (
        "The backup disk is nearly full: 900.0 MB free of 1.0 TB.",
    )


def test_a_running_backup_shows(data_dir: Path, folder: Path) -> None:
    with TargetLock(folder):
        assert status.summary(folder, data_dir / "app.db").running
    assert not status.summary(folder, data_dir / "app.db").running


@pytest.mark.parametrize(
    ("clock", "now", "expected"),
    [
        ("02:30", datetime(2024, 6, 12, 1, 0), datetime(2024, 6, 12, 2, 30)),
        ("02:30", datetime(2024, 6, 12, 2, 30), datetime(2024, 6, 13, 2, 30)),
        ("23:59", datetime(2024, 12, 31, 23, 59, 30), datetime(2025, 1, 1, 23, 59)),
    ],
)
def test_next_run(clock: str, now: datetime, expected: datetime) -> None:
    assert status.next_run(clock, now.astimezone()) == expected.astimezone()


def test_the_job_records_every_run_and_refuses_a_second_at_once(
    data_dir: Path, folder: Path
) -> None:
    job = BackupJob(data_dir, folder, Retention(), "02:30")

    assert job.start_now("web")
    assert not job.start_now("web")  # one at a time
    job.wait(timeout=60)
    job.run("schedule")

    runs = history.recent_runs(data_dir / "app.db")
    assert sorted(run.trigger for run in runs) == ["schedule", "web"]
    assert all(run.ok for run in runs)
    assert job.summary().last_run is not None


def test_the_job_does_nothing_when_backups_are_off(data_dir: Path) -> None:
    job = BackupJob(data_dir, None, Retention(), "02:30")

    assert job.run() is None
    assert not job.start_now()
    assert history.recent_runs(data_dir / "app.db") == []


def test_a_backup_process_that_dies_is_recorded_as_failed(
    data_dir: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = BackupJob(data_dir, folder, Retention(), "02:30")
    monkeypatch.setattr(
        job, "_argv", lambda *_args: [sys.executable, "-c", "raise SystemExit(3)"]
    )

    result = job.run("schedule")

    assert result is not None and not result.ok
    assert result.error == "the backup process ended with status 3 and no result"
    [run] = history.recent_runs(data_dir / "app.db")
    assert not run.ok and run.error == result.error


def test_a_stopped_job_starts_nothing(data_dir: Path, folder: Path) -> None:
    job = BackupJob(data_dir, folder, Retention(), "02:30")

    job.stop()

    assert job.run() is None and not job.start_now()
    assert list_snapshots(folder) == []
