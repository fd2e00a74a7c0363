"""Recovery on start: a damaged index is set aside and rebuilt; reconcile."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance import scheduling
from appliance.datalock import DataFolderBusyError, DataFolderLock
from appliance.errors import DatabaseDamagedError
from appliance.index import IndexWriter, index_reader
from appliance.index.recovery import diagnose_index, move_aside, reconcile
from appliance.maintenance import IndexKeeper, verify_state_db
from appliance.state import add_modality
from appliance.state.schema import open_state
from appliance.storage import Storage
from tests._rebuild_helpers import (
    dump_database,
    index_snapshot,
    ingest,
    make_instances,
    run_command,
    running_server,
    send,
)

# --- Ways to damage index.db --------------------------------------------


def _delete(index: Path) -> None:
    index.unlink()


def _truncate(index: Path) -> None:
    with index.open("r+b") as handle:
        handle.truncate(index.stat().st_size // 2)


def _garbage(index: Path) -> None:
    index.write_bytes(os.urandom(index.stat().st_size))


def _empty(index: Path) -> None:
    index.write_bytes(b"")


def _future_schema(index: Path) -> None:
    with closing(sqlite3.connect(index)) as conn:
        conn.execute("PRAGMA user_version = 99")
        conn.commit()


DAMAGE: dict[str, Callable[[Path], None]] = {
    "deleted": _delete,
    "truncated": _truncate,
    "garbage": _garbage,
    "emptied": _empty,
    "future-schema": _future_schema,
}


@dataclass
class Folder:
    """A data folder filled by in-process ingest, with its app.db."""

    data_dir: Path
    storage: Storage

    @property
    def index(self) -> Path:
        return self.data_dir / "index.db"

    @property
    def app_db(self) -> Path:
        return self.data_dir / "app.db"


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    data_dir = tmp_path / "data"
    storage = Storage(data_dir)
    storage.prepare()
    with closing(open_state(data_dir / "app.db")) as conn:
        add_modality(conn, "RBSENDER")
    writer = IndexWriter(data_dir / "index.db")
    writer.start()
    for path in make_instances(tmp_path / "source", 10):
        ingest(storage, writer, path)
    writer.stop()
    return Folder(data_dir, storage)


def _keeper(folder: Folder) -> tuple[IndexKeeper, IndexWriter]:
    writer = IndexWriter(folder.index)
    keeper = IndexKeeper(
        folder.data_dir, folder.index, folder.app_db, folder.storage, writer
    )
    return keeper, writer


@contextmanager
def _serving_in_process(folder: Folder) -> Iterator[IndexKeeper]:
    """Start the index side of the appliance as ``Appliance.start`` does."""
    keeper, writer = _keeper(folder)
    scheduler = scheduling.create_scheduler()
    keeper.prepare()
    writer.start()
    keeper.start(scheduler)
    scheduler.start()
    try:
        yield keeper
    finally:
        keeper.stop()
        scheduling.shutdown(scheduler)
        writer.stop()
        keeper.unlock()


def _wait_idle(keeper: IndexKeeper, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while keeper.health()["state"] != "idle" or keeper.status.state.running:
        assert time.monotonic() < deadline, keeper.health()
        time.sleep(0.05)


# --- Diagnosis and moving aside -----------------------------------------


def test_a_healthy_index_passes(folder: Folder) -> None:
    assert diagnose_index(folder.index) is None


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_each_damage_is_diagnosed(folder: Folder, damage: str) -> None:
    DAMAGE[damage](folder.index)

    reason = diagnose_index(folder.index)

    assert reason is not None
    expected = {
        "deleted": "missing",
        "future-schema": "newer",
        "emptied": "no schema",
    }
    assert expected.get(damage, "") in reason


def test_move_aside_keeps_the_set_together(folder: Folder) -> None:
    wal = Path(f"{folder.index}-wal")
    wal.write_bytes(b"log")

    moved = move_aside(folder.index)

    assert moved.name.startswith("index.db.damaged-")
    assert moved.exists() and Path(f"{moved}-wal").read_bytes() == b"log"
    assert not folder.index.exists() and not wal.exists()


# --- app.db is never replaced --------------------------------------------


def test_a_damaged_app_db_is_refused(folder: Folder) -> None:
    folder.app_db.write_bytes(os.urandom(4096))

    with pytest.raises(DatabaseDamagedError, match="latest backup"):
        verify_state_db(folder.app_db)


def test_the_service_refuses_a_damaged_app_db(folder: Folder) -> None:
    folder.app_db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    keeper, _ = _keeper(folder)

    with pytest.raises(DatabaseDamagedError):
        keeper.prepare()
    keeper.lock.acquire()  # the refusal released the lock
    keeper.unlock()


def test_a_missing_app_db_with_an_index_is_reported(
    folder: Folder, caplog: pytest.LogCaptureFixture
) -> None:
    folder.app_db.unlink()
    keeper, _ = _keeper(folder)

    keeper.prepare()
    keeper.unlock()

    assert "APP.DB MISSING" in caplog.text


def test_one_process_at_a_time(folder: Folder) -> None:
    first = DataFolderLock(folder.data_dir, "appliance serve")
    first.acquire()
    try:
        with pytest.raises(DataFolderBusyError, match="appliance serve"):
            DataFolderLock(folder.data_dir, "appliance rebuild-index").acquire()
    finally:
        first.release()


# --- Recovery on start, in process ---------------------------------------


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_start_rebuilds_a_damaged_index(folder: Folder, damage: str) -> None:
    before = index_snapshot(folder.index)
    app_db = dump_database(folder.app_db)
    DAMAGE[damage](folder.index)

    with _serving_in_process(folder) as keeper:
        _wait_idle(keeper)
        health = keeper.health()

    assert health["recovered_from"].startswith("index.db ")
    assert health["rebuild"]["state"] == "done"
    assert index_snapshot(folder.index) == before
    assert dump_database(folder.app_db) == app_db
    kept = [p for p in folder.data_dir.iterdir() if ".damaged-" in p.name]
    assert kept or damage == "deleted"


def test_reconcile_indexes_files_stored_but_not_indexed(
    folder: Folder, tmp_path: Path
) -> None:
    before = index_snapshot(folder.index)
    # A crash between the rename into storage/ and the index commit.
    extra = make_instances(tmp_path / "extra", 3, clips=False)
    for path in extra:
        ingest(folder.storage, None, path)

    with _serving_in_process(folder) as keeper:
        _wait_idle(keeper)
        reconciled = keeper.health()["reconcile"]

    assert reconciled["indexed"] == 3 and reconciled["missing"] == 0
    after = index_snapshot(folder.index)
    assert len(after["instances"]) == len(before["instances"]) + 3
    assert set(before["instances"]) <= set(after["instances"])


def test_reconcile_reports_missing_files_and_keeps_their_rows(
    folder: Folder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with index_reader(folder.index) as conn:
        gone = conn.execute("SELECT file_path FROM instances LIMIT 1").fetchone()[0]
    folder.storage.absolute(gone).unlink()
    writer = IndexWriter(folder.index)
    writer.start()

    result = reconcile(folder.storage, folder.index, writer, tmp_path / "queue.db")
    writer.stop()

    assert (result.missing, result.indexed) == (1, 0)
    assert gone in caplog.text
    with index_reader(folder.index) as conn:
        kept = conn.execute(
            "SELECT count(*) FROM instances WHERE file_path = ?", (gone,)
        ).fetchone()[0]
    assert kept == 1


# --- The real process -----------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("damage", ["deleted", "truncated", "garbage", "future-schema"])
def test_the_appliance_starts_and_rebuilds(tmp_path: Path, damage: str) -> None:
    data_dir = tmp_path / "data"
    files = make_instances(tmp_path / "source", 8)
    with running_server(data_dir) as server:
        assert send(server.dicom_port, files) == [0] * len(files)
    before = index_snapshot(data_dir / "index.db")
    app_db = dump_database(data_dir / "app.db")
    DAMAGE[damage](data_dir / "index.db")

    with running_server(data_dir) as server:
        index = server.wait_index_idle()
        # It serves while it rebuilds, and after.
        more = make_instances(tmp_path / "more", 2, clips=False)
        assert send(server.dicom_port, more) == [0, 0]

    assert index["rebuild"]["state"] == "done"
    assert index["recovered_from"]
    after = index_snapshot(data_dir / "index.db")
    assert len(after["instances"]) == len(before["instances"]) + 2
    assert set(before["instances"]) <= set(after["instances"])
    assert set(before["studies"]) <= set(after["studies"])
    assert dump_database(data_dir / "app.db") == app_db
    log = server.log.read_text()
    assert "INDEX DAMAGED" in log or "INDEX MISSING" in log


@pytest.mark.e2e
def test_a_wal_removed_while_running_is_recovered(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    files = make_instances(tmp_path / "source", 10, clips=False)
    with running_server(data_dir, kill=True) as server:
        assert send(server.dicom_port, files[:5]) == [0] * 5
        Path(f"{data_dir / 'index.db'}-wal").unlink()
        assert send(server.dicom_port, files[5:]) == [0] * 5
        # kill -9: whatever the lost log held is gone from index.db

    with running_server(data_dir) as server:
        server.wait_index_idle()

    with index_reader(data_dir / "index.db") as conn:
        count = conn.execute("SELECT count(*) FROM instances").fetchone()[0]
    assert count == 10

    # Whether it was set aside and rebuilt or reconciled, it matches a clean
    # rebuild of the same files (copied with their times).
    reference = tmp_path / "reference"
    shutil.copytree(data_dir / "storage", reference / "storage")
    shutil.copy2(data_dir / "app.db", reference / "app.db")
    assert run_command(reference, "rebuild-index").returncode == 0
    assert index_snapshot(data_dir / "index.db") == index_snapshot(
        reference / "index.db"
    )


@pytest.mark.e2e
def test_a_stored_but_unindexed_file_is_reconciled_at_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    files = make_instances(tmp_path / "source", 4, clips=False)
    with running_server(data_dir) as server:
        assert send(server.dicom_port, files[:3]) == [0, 0, 0]
    ingest(Storage(data_dir), None, files[3], source_ae="RBSENDER")

    with running_server(data_dir) as server:
        index = server.wait_index_idle()

    assert index["reconcile"]["indexed"] == 1
    with index_reader(data_dir / "index.db") as conn:
        assert conn.execute("SELECT count(*) FROM instances").fetchone()[0] == 4


@pytest.mark.e2e
def test_the_appliance_refuses_a_damaged_app_db(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(data_dir):
        pass
    (data_dir / "app.db").write_bytes(os.urandom(8192))

    result = run_command(data_dir, "serve", timeout=60)

    assert result.returncode != 0
    assert result.stderr.count("\n") == 1
    assert "app.db" in result.stderr and "latest backup" in result.stderr
