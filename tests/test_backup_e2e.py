"""End to end: backups of the real ``appliance serve`` while it receives."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from appliance import scheduling
from appliance.config import load_settings
from appliance.service import Appliance
from appliance.state.audit_chain import verify_chain
from backup import engine, history, list_snapshots
from backup.verify import verify_snapshot
from tests.backup_helpers import (
    Sender,
    appliance_cli,
    backup,
    cli,
    file_hashes,
    flip_byte,
    make_data_dir,
    python_m_backup,
    serve_copy,
    table_rows,
)
from tests.conftest import RunningAppliance, make_appliance
from tests.dicom_helpers import echo, renamed_copy, send_datasets, storescu

pytestmark = pytest.mark.e2e

SINGLES = ("ge_rgb", "aloka_palette", "philips_palette")


def _send_studies(
    appliance: RunningAppliance, files: dict[str, Path], n: int, clips: int = 1
) -> None:
    datasets = [renamed_copy(files[key]) for key in SINGLES for _ in range(n)]
    datasets += [renamed_copy(files["sonosite_cine"]) for _ in range(clips)]
    assert set(send_datasets(appliance.dicom_port, datasets)) == {0}


def test_a_backup_while_a_modality_sends_is_complete_and_consistent(
    appliance: RunningAppliance, ultrasound_files: dict[str, Path], tmp_path: Path
) -> None:
    target = tmp_path / "backups"
    target.mkdir()
    _send_studies(appliance, ultrasound_files, 10, clips=6)
    sender = Sender(appliance.dicom_port, [ultrasound_files[k] for k in SINGLES])

    sender.start()
    while len(sender.statuses) < 3:
        time.sleep(0.05)
    run = cli(appliance, "backup", "run", APPLIANCE_BACKUP_DIR=str(target))
    statuses = sender.finish()

    assert run.returncode == 0, run.stderr
    assert set(statuses) == {0}
    [snapshot] = list_snapshots(target)
    start, end = snapshot.started_at.timestamp(), snapshot.finished_at.timestamp()
    assert any(start <= when <= end for when in sender.times), "no store overlapped"
    assert verify_snapshot(snapshot.path).ok

    # Every row in the copied index has its file, with its hash; files that
    # arrived after the database copy are there too, without a row.
    uri = f"file:{snapshot.path / 'index.db'}?mode=ro&immutable=1"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        rows = conn.execute("SELECT file_path, sha256 FROM instances").fetchall()
    copied = file_hashes(snapshot.path / "storage")
    assert rows and all(copied.get(path) == sha for path, sha in rows)
    assert len(copied) >= len(rows)
    assert f"Backup {snapshot.name} complete" in run.stderr
    assert "files (" in run.stderr and "s, " in run.stderr


def test_a_file_stored_after_the_database_copy_is_indexed_after_restore(
    appliance: RunningAppliance,
    ultrasound_files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = tmp_path / "backups"
    target.mkdir()
    _send_studies(appliance, ultrasound_files, 1)
    real_scan = engine.scan

    def scan_after_a_store(data_dir: Path) -> list:
        # A modality stores one more instance between the two steps.
        late = renamed_copy(ultrasound_files["ge_rgb"])
        assert send_datasets(appliance.dicom_port, [late]) == [0]
        return real_scan(data_dir)

    monkeypatch.setattr(engine, "scan", scan_after_a_store)
    result = backup(appliance.data_dir, target)
    assert result.ok, result.error
    snapshot = target / result.snapshot
    assert _rows(snapshot / "index.db") == result.files - 1

    restored = tmp_path / "restored"
    restore = cli(appliance, "restore", str(snapshot), "--data-dir", str(restored))
    assert restore.returncode == 0, restore.stderr
    second = serve_copy(restored, appliance)
    second.start()
    try:
        deadline = time.monotonic() + 60
        while _rows(restored / "index.db") < result.files:
            assert time.monotonic() < deadline, "the late file was never indexed"
            time.sleep(0.2)
    finally:
        second.stop()


def _rows(index_db: Path) -> int:
    uri = f"file:{index_db}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM instances").fetchone()[0])


def test_restore_gives_back_every_file_and_row(
    appliance: RunningAppliance, ultrasound_files: dict[str, Path], tmp_path: Path
) -> None:
    target = tmp_path / "backups"
    target.mkdir()
    _send_studies(appliance, ultrasound_files, 2)
    assert storescu(appliance.dicom_port, ultrasound_files["ge_j2k"]).returncode == 0
    user = appliance.cli(
        "user", "add", "alice", "--role", "clinician", stdin="pw-a1b2c3d4e5\n"
    )
    assert user.returncode == 0, user.stderr
    appliance.stop()  # quiesced: nothing changes between backup and compare

    run = cli(appliance, "backup", "run", APPLIANCE_BACKUP_DIR=str(target))
    restored = tmp_path / "restored"
    restore = cli(
        appliance,
        "restore",
        "latest",
        "--data-dir",
        str(restored),
        APPLIANCE_BACKUP_DIR=str(target),
    )

    assert run.returncode == 0, run.stderr
    assert restore.returncode == 0, restore.stderr
    source = appliance.data_dir
    assert file_hashes(restored / "storage") == file_hashes(source / "storage")
    assert table_rows(restored / "index.db") == table_rows(source / "index.db")
    # After the copy, the source's history gained this backup's row and its
    # audit trail the backup; the restored audit trail gained the restore.
    ours = table_rows(source / "app.db", skip=("audit_head",))
    theirs = table_rows(restored / "app.db", skip=("audit_head",))
    assert ours.pop("backup_runs")[:-1] == theirs.pop("backup_runs")
    our_audit, their_audit = ours.pop("audit"), theirs.pop("audit")
    assert our_audit[:-1] == their_audit[:-1]
    assert (our_audit[-1][3], their_audit[-1][3]) == ("backup", "restore")
    assert verify_chain(restored / "app.db").ok
    assert theirs == ours and theirs["users"] and theirs["modalities"]

    # The restored folder serves: same studies, modalities and users.
    second = serve_copy(restored, appliance)
    second.start()
    try:
        assert echo(second.dicom_port, "STORESCU") == 0x0000
        check = second.cli("check")
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        second.stop()


def test_restore_over_a_data_folder_keeps_the_old_one(
    appliance: RunningAppliance, ultrasound_files: dict[str, Path], tmp_path: Path
) -> None:
    target = tmp_path / "backups"
    target.mkdir()
    _send_studies(appliance, ultrasound_files, 1)
    assert (
        cli(appliance, "backup", "run", APPLIANCE_BACKUP_DIR=str(target)).returncode
        == 0
    )

    # While the appliance runs on it, the folder is not replaced.
    refused = cli(appliance, "restore", "latest", APPLIANCE_BACKUP_DIR=str(target))
    assert refused.returncode == 1
    assert "in use by appliance serve" in refused.stderr.splitlines()[-1]

    _send_studies(appliance, ultrasound_files, 1)  # arrives after the backup
    appliance.stop()
    before = file_hashes(appliance.data_dir / "storage")
    restore = cli(appliance, "restore", "latest", APPLIANCE_BACKUP_DIR=str(target))

    assert restore.returncode == 0, restore.stderr
    [aside] = tmp_path.glob("data.before-restore-*")
    assert file_hashes(aside / "storage") == before
    assert len(file_hashes(appliance.data_dir / "storage")) < len(before)
    assert f"kept in {aside}" in restore.stdout


def test_appliance_restore_refuses_a_corrupted_snapshot(tmp_path: Path) -> None:
    data_dir = make_data_dir(tmp_path, files=5)
    target = tmp_path / "backups"
    target.mkdir()
    snapshot = target / backup(data_dir, target).snapshot
    flip_byte(sorted((snapshot / "storage").rglob("*.dcm"))[0])

    verify = appliance_cli(data_dir, target, "backup", "verify", snapshot.name)
    restore = appliance_cli(
        data_dir, target, "restore", "latest", "--data-dir", str(tmp_path / "new")
    )

    assert verify.returncode == 1
    assert verify.stderr.splitlines()[-1].startswith(
        f"appliance: snapshot {snapshot} is damaged: "
    )
    assert restore.returncode == 1
    last = restore.stderr.strip().splitlines()[-1]
    assert last.startswith("appliance: snapshot ") and "does not match" in last
    assert not (tmp_path / "new").exists()


def test_backup_list_shows_the_status_and_snapshots(tmp_path: Path) -> None:
    data_dir = make_data_dir(tmp_path, files=5)
    target = tmp_path / "backups"
    target.mkdir()
    assert appliance_cli(data_dir, target, "backup", "run").returncode == 0

    listing = appliance_cli(data_dir, target, "backup", "list")
    off = appliance_cli(data_dir, None, "backup", "list")

    [snapshot] = list_snapshots(target)
    assert listing.returncode == 0
    assert f"Backup folder: {target} (ok)" in listing.stdout
    assert f"Last complete backup: {snapshot.name}" in listing.stdout
    assert "Next backup: " in listing.stdout
    assert listing.stdout.splitlines()[-1].startswith(snapshot.name)
    assert "Warning: Backups are off" in off.stdout


def test_serve_says_whether_backups_are_on(
    appliance: RunningAppliance, tmp_path: Path
) -> None:
    target = tmp_path / "backups"
    target.mkdir()
    scheduled = make_appliance(
        tmp_path / "data2",
        {"APPLIANCE_BACKUP_DIR": str(target), "APPLIANCE_BACKUP_TIME": "03:15"},
    )
    scheduled.start()
    scheduled.stop()

    assert "Backups are off: backup_dir is not set" in appliance.log()
    assert f"Nightly backup at 03:15 into {target}" in scheduled.log()


def test_the_nightly_job_backs_up_and_records_the_run(tmp_path: Path) -> None:
    data_dir = make_data_dir(tmp_path, files=5)
    target = tmp_path / "backups"
    target.mkdir()
    settings = load_settings(
        environ={},
        overrides={
            "data_dir": str(data_dir),
            "backup_dir": str(target),
            "backup_time": "04:05",
        },
    )
    served = Appliance(settings)

    served._schedule_backups()
    job = served.scheduler.get_job("nightly-backup")
    served.scheduler.start(paused=True)
    try:
        assert (job.next_run_time.hour, job.next_run_time.minute) == (4, 5)
        assert job.next_run_time - datetime.now(job.next_run_time.tzinfo) <= timedelta(
            days=1
        )
        job.modify(next_run_time=datetime.now(job.next_run_time.tzinfo))
        served.scheduler.resume()
        deadline = time.monotonic() + 60
        while not history.recent_runs(data_dir / "app.db"):
            assert time.monotonic() < deadline, "the job did not run"
            time.sleep(0.1)
    finally:
        scheduling.shutdown(served.scheduler)

    [run] = history.recent_runs(data_dir / "app.db")
    assert run.ok and run.trigger == "schedule"
    assert [s.name for s in list_snapshots(target)] == [run.snapshot]


def test_the_backup_process_runs_at_idle_priority(tmp_path: Path) -> None:
    data_dir = make_data_dir(tmp_path, files=3)
    target = tmp_path / "backups"
    target.mkdir()

    run = python_m_backup(
        "run", "--data-dir", str(data_dir), "--target", str(target), "--idle"
    )

    assert run.returncode == 0, run.stderr
    assert "The backup runs at idle CPU priority" in run.stderr
    assert len(list_snapshots(target)) == 1
