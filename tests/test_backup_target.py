"""A missing, read-only or full backup folder: a clear error and a warning."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from backup import engine, list_snapshots
from backup.errors import RestoreRefusedError
from backup.restore import restore_snapshot
from backup.status import summary
from backup.verify import verify_snapshot
from tests.backup_helpers import (
    appliance_cli,
    backup,
    file_hashes,
    make_data_dir,
    tmpfs,
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return make_data_dir(tmp_path, files=5)


def test_a_missing_target_is_named_and_never_created(
    data_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "usb-disk" / "backups"

    result = backup(data_dir, target)
    command = appliance_cli(data_dir, target, "backup", "run")
    status = summary(target, data_dir / "app.db")

    assert not result.ok
    assert "does not exist: is the backup disk plugged in" in result.error
    assert command.returncode == 1
    assert command.stderr.splitlines()[-1] == f"appliance: {result.error}"
    assert not target.exists()
    assert status.target_state == "missing"
    assert any("is missing" in warning for warning in status.warnings)


def test_a_read_only_target_says_so(data_dir: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro-disk", "4m", read_only=True) as target:
        result = backup(data_dir, target)
        command = appliance_cli(data_dir, target, "backup", "run")
        status = summary(target, data_dir / "app.db")

    assert not result.ok and "is read-only" in result.error
    assert command.returncode == 1
    assert "is read-only" in command.stderr.splitlines()[-1]
    assert status.target_state == "read-only"
    assert any("read-only" in warning for warning in status.warnings)


def test_a_full_target_fails_before_copying(data_dir: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small-disk", "1m") as target:
        (data_dir / "storage" / "big.bin").write_bytes(b"\0" * 3_000_000)

        result = backup(data_dir, target)
        status = summary(target, data_dir / "app.db")
        leftovers = [p.name for p in target.iterdir()]

    assert not result.ok
    assert "the backup disk is full" in result.error and "needs about" in result.error
    assert leftovers == [".backup.lock"]
    assert status.target_state == "nearly full"
    assert any("nearly full" in warning for warning in status.warnings)


def test_a_disk_that_fills_during_the_copy_leaves_nothing(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Something else fills the disk after the free-space check.
    monkeypatch.setattr(engine, "check_room", lambda *_args: None)
    with tmpfs(tmp_path / "small-disk", "1m") as target:
        (data_dir / "storage" / "big.bin").write_bytes(b"\0" * 3_000_000)

        result = backup(data_dir, target)
        leftovers = [p.name for p in target.iterdir()]

    assert not result.ok
    assert result.error.startswith("the backup disk is full: cannot write ")
    assert leftovers == [".backup.lock"]


def test_the_next_run_after_a_full_disk_works(data_dir: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small-disk", "2m") as target:
        big = data_dir / "storage" / "big.bin"
        big.write_bytes(b"\0" * 3_000_000)
        assert not backup(data_dir, target).ok

        big.unlink()
        result = backup(data_dir, target)

        assert result.ok, result.error
        assert [s.name for s in list_snapshots(target)] == [result.snapshot]


def test_a_read_only_backup_disk_can_still_be_restored_from(
    data_dir: Path, tmp_path: Path
) -> None:
    # As after a crash: the owner mounts the backup disk read-only to restore.
    with tmpfs(tmp_path / "usb-disk", "8m") as target:
        result = backup(data_dir, target)
        subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)

        verified = verify_snapshot(target / result.snapshot)
        restored = restore_snapshot("latest", tmp_path / "new", target=target)

    assert verified.ok, verified.problems
    assert restored.moved_aside is None
    assert file_hashes(tmp_path / "new" / "storage") == file_hashes(
        data_dir / "storage"
    )


def test_a_restore_that_cannot_fit_is_refused_before_copying(
    data_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "backups"
    target.mkdir()
    (data_dir / "storage" / "big.bin").write_bytes(os.urandom(3_000_000))
    assert backup(data_dir, target).ok

    with tmpfs(tmp_path / "small-data-disk", "1m") as small:
        with pytest.raises(
            RestoreRefusedError,
            match=r"the restore needs 3\.\d MB but .* has 1\.0 MB free",
        ):
            restore_snapshot("latest", small / "data", target=target)
        assert list(small.iterdir()) == []
