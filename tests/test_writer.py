"""The one index writer: batches, isolates failures, stops cleanly."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from appliance.index import (
    IndexWriter,
    Outcome,
    WriterStoppedError,
    open_index_reader,
    queries,
)
from tests.index_helpers import record_of


def test_concurrent_adds_are_all_committed(
    tmp_path: Path, ultrasound_files: dict[str, Path]
) -> None:
    writer = IndexWriter(tmp_path / "index.db")
    writer.start()
    records = [record_of(ultrasound_files["ge_rgb"]) for _ in range(60)]
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def add(record) -> None:  # type: ignore[no-untyped-def]
        result = writer.add_instance(record)
        with lock:
            outcomes.append(result.outcome)

    threads = [threading.Thread(target=add, args=(r,)) for r in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.stop()

    assert outcomes == [Outcome.ADDED] * 60
    reader = open_index_reader(tmp_path / "index.db")
    assert queries.counts(reader).instances == 60


def test_a_failing_job_does_not_undo_its_batch_neighbours(tmp_path: Path) -> None:
    writer = IndexWriter(tmp_path / "index.db")
    writer.start()

    def good(conn: sqlite3.Connection) -> int:
        conn.execute(
            "INSERT INTO patients (patient_id, issuer, name, name_key, birth_date,"
            " sex, first_seen_at, first_source_ae) VALUES ('1','','','','','','','')"
        )
        return 1

    def bad(conn: sqlite3.Connection) -> int:
        good(conn)
        raise ValueError("this job fails")

    futures = [writer.submit(good), writer.submit(bad), writer.submit(good)]
    writer.stop()

    assert futures[0].result() == 1 and futures[2].result() == 1
    with pytest.raises(ValueError):
        futures[1].result()
    assert queries.counts(open_index_reader(tmp_path / "index.db")).patients == 2


def test_readers_are_not_blocked_while_writing(tmp_path: Path) -> None:
    writer = IndexWriter(tmp_path / "index.db")
    writer.start()
    inside = threading.Event()
    release = threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO patients (patient_id, issuer, name, name_key, birth_date,"
            " sex, first_seen_at, first_source_ae) VALUES ('1','','','','','','','')"
        )
        inside.set()
        release.wait(10)

    future = writer.submit(slow)
    assert inside.wait(10)
    reader = open_index_reader(tmp_path / "index.db")
    assert queries.counts(reader).patients == 0
    release.set()
    future.result()
    assert queries.counts(reader).patients == 1
    writer.stop()


def test_submit_after_stop_is_refused(tmp_path: Path) -> None:
    writer = IndexWriter(tmp_path / "index.db")
    writer.start()
    writer.stop()

    with pytest.raises(WriterStoppedError):
        writer.submit(lambda conn: None)
