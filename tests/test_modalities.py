"""Registered modalities, through the command line."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import BIN


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "appliance"), "modality", *args],
        env={"APPLIANCE_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )


def test_add_list_remove(tmp_path: Path) -> None:
    data = tmp_path / "data"

    assert (
        _cli(
            data,
            "add",
            "SEQUOIA",
            "--host",
            "10.0.0.5",
            "--port",
            "104",
            "--issuer",
            "CLINIC-A",
        ).returncode
        == 0
    )
    listing = _cli(data, "list").stdout
    assert "SEQUOIA" in listing and "10.0.0.5" in listing and "CLINIC-A" in listing

    assert _cli(data, "remove", "SEQUOIA").returncode == 0
    assert "No modality registered" in _cli(data, "list").stdout


def test_duplicate_and_bad_titles_are_refused_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _cli(data, "add", "SEQUOIA")

    duplicate = _cli(data, "add", "SEQUOIA")
    too_long = _cli(data, "add", "A" * 17)
    exist_ok = _cli(data, "add", "SEQUOIA", "--exist-ok")
    missing = _cli(data, "remove", "NOPE")

    assert duplicate.returncode == 2 and "already registered" in duplicate.stderr
    assert too_long.returncode == 2 and too_long.stderr.count("\n") == 1
    assert exist_ok.returncode == 0
    assert missing.returncode == 1


def test_modality_changes_from_the_command_line_are_audited(tmp_path: Path) -> None:
    import sqlite3

    data = tmp_path / "data"
    _cli(data, "add", "SEQUOIA", "--host", "10.0.0.5")
    _cli(data, "remove", "SEQUOIA")

    with sqlite3.connect(data / "app.db") as conn:
        actions = [row[0] for row in conn.execute("SELECT action FROM audit")]
    assert actions[-2:] == ["modality-add", "modality-remove"]
