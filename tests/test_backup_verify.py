"""A damaged snapshot is caught by verify and refused by restore."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from backup.databases import integrity_problem
from backup.errors import SnapshotDamagedError
from backup.restore import restore_snapshot
from backup.snapshots import list_snapshots
from backup.verify import verify_snapshot
from tests.backup_helpers import (
    backup,
    file_hashes,
    flip_byte,
    make_data_dir,
    python_m_backup,
)


def _flip_stored_byte(snapshot: Path) -> str:
    flip_byte(sorted((snapshot / "storage").rglob("*.dcm"))[0])
    return "does not match its SHA-256"


def _truncate_index_copy(snapshot: Path) -> str:
    with (snapshot / "index.db").open("r+b") as handle:
        handle.truncate(1024)
    return "index.db has 1024 bytes"


def _delete_complete_marker(snapshot: Path) -> str:
    (snapshot / "COMPLETE").unlink()
    return "not complete"


def _delete_stored_file(snapshot: Path) -> str:
    sorted((snapshot / "storage").rglob("*.dcm"))[-1].unlink()
    return "is missing"


def _add_unlisted_file(snapshot: Path) -> str:
    (snapshot / "storage" / "stray.dcm").write_bytes(b"x")
    return "not in the manifest"


def _edit_manifest(snapshot: Path) -> str:
    uri = f"file:{snapshot / 'manifest.db'}"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        conn.execute("UPDATE files SET size = size + 1 WHERE path = 'app.db'")
        conn.commit()
    return "manifest.db is not the one recorded"


DAMAGE: dict[str, Callable[[Path], str]] = {
    "flipped byte": _flip_stored_byte,
    "truncated db copy": _truncate_index_copy,
    "no COMPLETE marker": _delete_complete_marker,
    "deleted file": _delete_stored_file,
    "unlisted file": _add_unlisted_file,
    "edited manifest": _edit_manifest,
}


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    data_dir = make_data_dir(tmp_path, files=10)
    target = tmp_path / "backups"
    target.mkdir()
    result = backup(data_dir, target)
    assert result.ok, result.error
    return target / result.snapshot


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_verify_catches_the_damage(snapshot: Path, damage: str) -> None:
    expected = DAMAGE[damage](snapshot)

    report = verify_snapshot(snapshot)

    assert not report.ok
    assert any(expected in problem for problem in report.problems), report.problems


def test_a_quick_verify_checks_sizes_not_hashes(snapshot: Path) -> None:
    _flip_stored_byte(snapshot)

    assert verify_snapshot(snapshot, deep=False).ok
    assert not verify_snapshot(snapshot, deep=True).ok


def test_a_truncated_db_copy_fails_its_integrity_check(snapshot: Path) -> None:
    # Truncated to a whole number of pages, with the manifest agreeing, so
    # that only SQLite's own check can tell.
    copy = snapshot / "index.db"
    with copy.open("r+b") as handle:
        handle.truncate(copy.stat().st_size - 4096)

    assert integrity_problem(copy) is not None


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_restore_refuses_a_damaged_snapshot(
    snapshot: Path, tmp_path: Path, damage: str
) -> None:
    DAMAGE[damage](snapshot)
    data_dir = tmp_path / "live"
    data_dir.mkdir()
    (data_dir / "app.db").write_text("the data in use")
    before = file_hashes(data_dir)

    with pytest.raises(SnapshotDamagedError) as caught:
        restore_snapshot(snapshot, data_dir)

    assert "\n" not in str(caught.value)
    assert file_hashes(data_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir() if "live" in p.name) == ["live"]


def test_python_m_backup_refuses_with_one_line(snapshot: Path, tmp_path: Path) -> None:
    _flip_stored_byte(snapshot)

    verify = python_m_backup("verify", str(snapshot))
    restore = python_m_backup(
        "restore", str(snapshot), "--data-dir", str(tmp_path / "new")
    )

    assert verify.returncode == 1
    assert "is damaged" in verify.stderr.splitlines()[-1]
    assert restore.returncode == 1
    assert restore.stderr.strip().splitlines()[-1].startswith("backup: snapshot ")
    assert "does not match" in restore.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "new").exists()


def test_a_damaged_snapshot_is_no_base_for_the_next(
    snapshot: Path, tmp_path: Path
) -> None:
    _delete_complete_marker(snapshot)

    assert list_snapshots(snapshot.parent) == []
