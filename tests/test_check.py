"""``appliance check [--deep]``: index against storage, and content hashes."""

from __future__ import annotations

import shutil
from contextlib import closing
from pathlib import Path

import pytest

from appliance import db
from appliance.index import IndexWriter, index_reader
from appliance.index.check import run_check
from appliance.maintenance import IndexKeeper
from appliance.progress import Progress
from appliance.state.checks import latest_check
from appliance.state.schema import open_state
from appliance.storage import Storage
from tests._rebuild_helpers import ingest, make_instances, run_command


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    storage = Storage(tmp_path / "data")
    storage.prepare()
    writer = IndexWriter(tmp_path / "data" / "index.db")
    writer.start()
    for path in make_instances(tmp_path / "source", 5, clips=False):
        ingest(storage, writer, path)
    writer.stop()
    open_state(tmp_path / "data" / "app.db").close()
    return storage


def _index(storage: Storage) -> Path:
    return storage.data_dir / "index.db"


def _stored(storage: Storage) -> list[Path]:
    with index_reader(_index(storage)) as conn:
        rows = conn.execute("SELECT file_path FROM instances ORDER BY id").fetchall()
    return [storage.absolute(row[0]) for row in rows]


def test_a_clean_folder_passes(storage: Storage) -> None:
    progress = Progress()

    report = run_check(storage, _index(storage), deep=True, progress=progress)

    assert report.ok, report.problems
    assert (report.files, report.rows) == (5, 5)
    assert progress.view().done == 5


def test_a_missing_file_is_a_problem(storage: Storage) -> None:
    _stored(storage)[0].unlink()

    report = run_check(storage, _index(storage))

    assert not report.ok
    assert report.counts["missing_files"] == 1
    assert "indexed but missing" in report.problems[0]


def test_stored_but_unindexed_and_foreign_files_are_problems(
    storage: Storage, tmp_path: Path
) -> None:
    extra = make_instances(tmp_path / "extra", 1, clips=False)[0]
    ingest(storage, None, extra)
    (storage.files_dir / "2024").mkdir()
    (storage.files_dir / "2024" / "notes.txt").write_text("?")

    report = run_check(storage, _index(storage))

    assert report.counts["unindexed_files"] == 1
    assert report.counts["foreign_files"] == 1


def test_a_changed_size_is_found_without_deep(storage: Storage) -> None:
    with _stored(storage)[1].open("ab") as handle:
        handle.write(b"\0\0")

    report = run_check(storage, _index(storage))

    assert report.counts["size_mismatches"] == 1


def test_only_deep_finds_changed_content(storage: Storage) -> None:
    target = _stored(storage)[2]
    content = bytearray(target.read_bytes())
    content[-1] ^= 0xFF
    target.write_bytes(bytes(content))

    shallow = run_check(storage, _index(storage))
    deep = run_check(storage, _index(storage), deep=True)

    assert shallow.ok
    assert deep.counts["hash_mismatches"] == 1
    assert "content changed" in deep.problems[0]


def test_a_redundant_copy_is_not_a_problem(storage: Storage) -> None:
    original = _stored(storage)[0]
    copy = original.parent.parent / "OTHER" / original.name
    copy.parent.mkdir()
    shutil.copy2(original, copy)

    report = run_check(storage, _index(storage))

    assert report.ok
    assert report.redundant_copies == 1


def test_the_command_exits_non_zero_and_records(storage: Storage) -> None:
    clean = run_command(storage.data_dir, "check")
    _stored(storage)[0].unlink()
    broken = run_command(storage.data_dir, "check", "--deep")

    assert clean.returncode == 0, clean.stderr
    assert "no problem found" in clean.stdout
    assert broken.returncode == 1
    assert "indexed but missing" in broken.stdout
    with closing(db.connect(storage.data_dir / "app.db", readonly=True)) as conn:
        last = latest_check(conn)
        count = conn.execute("SELECT count(*) FROM integrity_checks").fetchone()[0]
    assert count == 2
    assert last is not None and not last.ok and last.deep
    assert last.trigger == "command" and last.counts["missing_files"] == 1


def test_the_scheduled_check_is_recorded_and_shown(storage: Storage) -> None:
    data_dir = storage.data_dir
    keeper = IndexKeeper(
        data_dir,
        _index(storage),
        data_dir / "app.db",
        storage,
        IndexWriter(_index(storage)),
    )

    report = keeper.check(deep=True, trigger="schedule")

    assert report.ok
    shown = keeper.health()["last_check"]
    assert shown["ok"] and shown["trigger"] == "schedule" and shown["deep"]
    with closing(db.connect(data_dir / "app.db", readonly=True)) as conn:
        recorded = latest_check(conn)
    assert recorded is not None and recorded.trigger == "schedule"
