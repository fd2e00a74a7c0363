"""Helpers for the backup tests: small data folders, comparisons, small disks.

A "fake" data folder here has the real layout (``app.db`` with the
appliance's own migrations, an ``index.db`` in WAL mode, and stored files
named ``<uid>.<sha256>.dcm``) but random bytes instead of DICOM, so that the
engine can be tested in milliseconds. End-to-end tests use the real
``appliance serve`` from ``conftest.py`` instead.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from appliance.state.schema import open_state
from backup import BackupOptions, BackupResult, Retention, run_backup
from tests.conftest import BIN, RunningAppliance, free_port
from tests.dicom_helpers import renamed_copy, send_datasets


def make_data_dir(root: Path, files: int = 20, day: str = "2024/05/02") -> Path:
    """Create a small data folder with `files` stored files; return it."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    with closing(open_state(data_dir / "app.db")) as conn:
        conn.execute(
            "INSERT INTO modalities (ae_title, created_at) VALUES ('SEQUOIA', 'x')"
        )
    with closing(sqlite3.connect(data_dir / "index.db")) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS instances (file_path TEXT)")
        conn.execute("CREATE TABLE IF NOT EXISTS studies (id INTEGER PRIMARY KEY)")
        conn.commit()
    add_files(data_dir, files, day)
    return data_dir


def add_files(data_dir: Path, count: int, day: str = "2024/05/03") -> list[str]:
    """Store `count` new random files (and index them); return their paths."""
    paths = []
    with closing(sqlite3.connect(data_dir / "index.db")) as conn:
        for _ in range(count):
            content = os.urandom(2000 + int.from_bytes(os.urandom(2), "big"))
            sha = hashlib.sha256(content).hexdigest()
            uid = f"1.2.826.0.1.{int.from_bytes(os.urandom(6), 'big')}"
            relative = f"{day}/SEQUOIA/{uid}.{sha}.dcm"
            target = data_dir / "storage" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            conn.execute("INSERT INTO instances (file_path) VALUES (?)", (relative,))
            paths.append(relative)
        conn.commit()
    return paths


def backup(
    data_dir: Path,
    target: Path,
    now: datetime | None = None,
    retention: Retention | None = None,
) -> BackupResult:
    """Run one backup in this process."""
    options = BackupOptions(data_dir, target, retention or Retention())
    return run_backup(options, now=now)


def file_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under `root`, by path relative to it."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def table_rows(database: Path, skip: tuple[str, ...] = ()) -> dict[str, list]:
    """Every row of every table of a database, in column order, by table."""
    uri = f"file:{database}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        rows = {}
        for table in tables:
            if table in skip:
                continue
            width = len(conn.execute(f"SELECT * FROM {table} LIMIT 0").description)
            order = ", ".join(str(n) for n in range(1, width + 1))
            rows[table] = conn.execute(
                f"SELECT * FROM {table} ORDER BY {order}"
            ).fetchall()
        return rows


def flip_byte(path: Path, offset: int = 100) -> None:
    """Change one byte of a file in place (a hardlink's inode included)."""
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def cli(appliance: RunningAppliance, *args: str, **env: str):  # type: ignore[no-untyped-def]
    """Run ``appliance ARGS`` for this appliance, with extra environment."""
    return subprocess.run(
        [str(BIN / "appliance"), *args],
        env={**appliance.env, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def appliance_cli(
    data_dir: Path, target: Path | None, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run ``appliance ARGS`` on a data folder, with backup_dir set to `target`."""
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(data_dir)}
    env.pop("APPLIANCE_CONFIG", None)
    if target is not None:
        env["APPLIANCE_BACKUP_DIR"] = str(target)
    return subprocess.run(
        [str(BIN / "appliance"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def python_m_backup(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m backup ARGS``, as on a machine without the appliance."""
    return subprocess.run(
        [str(BIN / "python"), "-m", "backup", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@contextmanager
def tmpfs(mount_point: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """Mount a small tmpfs at `mount_point` (root only; skips otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
        check=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@dataclass
class Sender:
    """Pushes copies of real files, one association each, until stopped.

    ``times`` holds the wall-clock time each store was answered.
    """

    port: int
    sources: list[Path]
    statuses: list[int | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        """Start pushing on a thread."""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def finish(self) -> list[int | None]:
        """Stop after the current association; return every status."""
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout=120)
        return self.statuses

    def _run(self) -> None:
        while not self.stop.is_set():
            for path in self.sources:
                self.statuses += send_datasets(self.port, [renamed_copy(path)])
                self.times.append(time.time())


def serve_copy(data_dir: Path, like: RunningAppliance) -> RunningAppliance:
    """Prepare (not start) an appliance on `data_dir` with fresh ports.

    Unlike ``make_appliance`` it registers nothing: a restored folder
    already holds its modalities.
    """
    env = {
        **like.env,
        "APPLIANCE_DATA_DIR": str(data_dir),
        "APPLIANCE_DICOM_PORT": str(free_port()),
        "APPLIANCE_HTTP_PORT": str(free_port()),
    }
    return RunningAppliance(
        data_dir=data_dir,
        dicom_port=int(env["APPLIANCE_DICOM_PORT"]),
        http_port=int(env["APPLIANCE_HTTP_PORT"]),
        env=env,
        log_path=data_dir.parent / f"{data_dir.name}.log",
    )
