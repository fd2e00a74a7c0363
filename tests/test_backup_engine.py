"""The backup engine on small data folders: snapshots, links, locks, checks."""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from backup import engine, list_snapshots, readback
from backup.lock import TargetLock
from backup.manifest import Manifest
from backup.verify import verify_snapshot
from tests.backup_helpers import (
    add_files,
    backup,
    file_hashes,
    flip_byte,
    make_data_dir,
)

MONDAY = datetime(2024, 5, 6, 2, 30).astimezone()
TUESDAY = MONDAY + timedelta(days=1)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return make_data_dir(tmp_path, files=20)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    folder = tmp_path / "backups"
    folder.mkdir()
    return folder


def test_a_snapshot_holds_everything_listed_with_its_hash(
    data_dir: Path, target: Path
) -> None:
    result = backup(data_dir, target)

    assert result.ok, result.error
    snapshot = target / result.snapshot
    assert (snapshot / "COMPLETE").exists()
    with Manifest(snapshot / "manifest.db") as manifest:
        listed = {entry.path: entry.sha256 for entry in manifest.entries()}
    on_disk = file_hashes(snapshot)
    for name in ("COMPLETE", "manifest.db"):
        on_disk.pop(name)
    assert listed == on_disk
    source = {
        f"storage/{path}": sha
        for path, sha in file_hashes(data_dir / "storage").items()
    }
    assert {k: v for k, v in listed.items() if k.startswith("storage/")} == source
    assert (result.files, result.copied_files, result.linked_files) == (20, 20, 0)
    assert verify_snapshot(snapshot).ok


def test_the_database_copies_are_whole_and_standalone(
    data_dir: Path, target: Path
) -> None:
    result = backup(data_dir, target)

    copy = target / result.snapshot / "app.db"
    with closing(sqlite3.connect(f"file:{copy}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT ae_title FROM modalities").fetchall() == [
            ("SEQUOIA",)
        ]
    assert not list((target / result.snapshot).glob("*-wal"))


def test_the_second_snapshot_hardlinks_unchanged_files(
    data_dir: Path, target: Path
) -> None:
    first = backup(data_dir, target, now=MONDAY)
    new = add_files(data_dir, 3)
    second = backup(data_dir, target, now=TUESDAY)

    assert second.ok, second.error
    assert (second.copied_files, second.linked_files) == (3, 20)
    old_files = sorted((target / first.snapshot / "storage").rglob("*.dcm"))
    assert len(old_files) == 20
    for path in old_files:
        relative = path.relative_to(target / first.snapshot)
        linked = target / second.snapshot / relative
        assert linked.stat().st_ino == path.stat().st_ino
    for relative in new:
        copied = target / second.snapshot / "storage" / relative
        assert copied.stat().st_nlink == 1
    assert verify_snapshot(target / second.snapshot).ok


def test_the_complete_marker_describes_the_snapshot(
    data_dir: Path, target: Path
) -> None:
    result = backup(data_dir, target)

    info = json.loads((target / result.snapshot / "COMPLETE").read_text())
    assert info["files"] == 20 and info["copied_files"] == 20
    assert info["studies"] == 0 and info["instances"] == 20
    assert info["source"] == str(data_dir.resolve())
    assert [s.name for s in list_snapshots(target)] == [result.snapshot]


def test_an_interrupted_run_is_ignored_then_cleared(
    data_dir: Path, target: Path
) -> None:
    torn = target / "2024-05-01_023000.partial"
    (torn / "storage").mkdir(parents=True)
    unmarked = target / "2024-05-01_013000"
    unmarked.mkdir()

    assert list_snapshots(target) == []
    result = backup(data_dir, target)

    assert result.ok and result.linked_files == 0
    assert not torn.exists()
    assert unmarked.exists()
    assert [s.name for s in list_snapshots(target)] == [result.snapshot]


def test_one_backup_at_a_time(data_dir: Path, target: Path) -> None:
    with TargetLock(target):
        result = backup(data_dir, target)

    assert not result.ok and result.busy
    assert "is running" in result.error
    assert list(target.iterdir()) == [target / ".backup.lock"]


def test_a_failed_run_leaves_no_partial_snapshot(
    data_dir: Path, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(engine.StorageCopier, "run", fail)
    result = backup(data_dir, target)

    assert not result.ok and "Input/output error" in result.error
    assert [p.name for p in target.iterdir()] == [".backup.lock"]


def test_a_stored_file_that_does_not_match_its_name_is_reported(
    data_dir: Path, target: Path
) -> None:
    damaged = sorted((data_dir / "storage").rglob("*.dcm"))[0]
    flip_byte(damaged)

    result = backup(data_dir, target)

    assert result.ok
    assert any(damaged.name in problem for problem in result.problems)


def test_a_damaged_link_is_copied_afresh(
    data_dir: Path, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = backup(data_dir, target, now=MONDAY)
    rotten = sorted((target / first.snapshot / "storage").rglob("*.dcm"))[0]
    flip_byte(rotten)
    monkeypatch.setattr(readback, "SAMPLE_MIN_FILES", 1000)

    second = backup(data_dir, target, now=TUESDAY)

    assert second.ok, second.error
    assert any("copied afresh" in problem for problem in second.problems)
    fresh = target / second.snapshot / rotten.relative_to(target / first.snapshot)
    assert fresh.stat().st_ino != rotten.stat().st_ino
    assert verify_snapshot(target / second.snapshot).ok
    assert not verify_snapshot(target / first.snapshot).ok


def test_a_missing_index_still_backs_up_the_rest(data_dir: Path, target: Path) -> None:
    (data_dir / "index.db").unlink()
    (data_dir / "index.db-wal").unlink(missing_ok=True)
    (data_dir / "index.db-shm").unlink(missing_ok=True)

    result = backup(data_dir, target)

    assert result.ok and any("index.db" in p for p in result.problems)
    assert verify_snapshot(target / result.snapshot).ok


def test_a_target_inside_the_data_folder_is_refused(data_dir: Path) -> None:
    inside = data_dir / "backups"
    inside.mkdir()

    result = backup(data_dir, inside)

    assert not result.ok and "inside each other" in result.error


def test_a_cancelled_run_leaves_nothing(data_dir: Path, target: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    options = engine.BackupOptions(data_dir, target, cancel=cancel)

    result = engine.run_backup(options)

    assert not result.ok and "cancelled" in result.error
    assert list_snapshots(target) == []
