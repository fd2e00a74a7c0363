"""The study list's queries: filters, order, keyset paging, and their speed."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.index import IndexWriter, InstanceRecord, open_index_reader
from appliance.index.browse import PageKey, StudyQuery, find_studies
from appliance.index.ingest import add_instance
from tests.web.conftest import Archive

STUDIES = 30_000
BASE = InstanceRecord(
    file_path="",
    file_size=1,
    sha256="0" * 64,
    received_at="2024-01-01T00:00:00",
    source_ae="US1",
    patient_id="",
    issuer_of_patient_id="",
    patient_name="",
    patient_birth_date="19800101",
    patient_sex="F",
    study_instance_uid="",
    study_date="",
    study_time="120000",
    accession_number="",
    study_description="",
    referring_physician="",
    series_instance_uid="",
    modality="US",
    series_number=1,
    series_description="",
    sop_instance_uid="",
    sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1",
    transfer_syntax_uid="1.2.840.10008.1.2.1",
    instance_number=1,
    number_of_frames=1,
    rows=480,
    columns=640,
    photometric_interpretation="RGB",
)


def synthetic(number: int) -> InstanceRecord:
    """One study of one instance; dates cycle over about eight years."""
    day = 20170101 + (number % 12) * 100 + (number % 28)
    return replace(
        BASE,
        file_path=f"x/{number}.dcm",
        sha256=f"{number:064x}",
        patient_id=f"ID{number % 9000:05d}",
        patient_name=f"PATIENT{number % 9000}^GIVEN{number % 7}",
        study_instance_uid=f"1.2.3.{number}",
        study_date=str(day + (number % 8) * 10000),
        study_time=f"{number % 24:02d}0000",
        accession_number=f"A{number:06d}",
        study_description="Liver" if number % 3 else "Thyroid",
        series_instance_uid=f"1.2.3.{number}.1",
        sop_instance_uid=f"1.2.3.{number}.1.1",
        number_of_frames=1 + number % 2 * 59,
    )


@pytest.fixture(scope="module")
def big_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    """An index of 30,000 studies, and a reader's connection to it."""
    path: Path = tmp_path_factory.mktemp("big") / "index.db"
    writer = IndexWriter(path)
    writer.start()

    def fill(conn: sqlite3.Connection) -> None:
        for number in range(STUDIES):
            add_instance(conn, synthetic(number))

    writer.submit(fill).result()
    writer.stop()
    with closing(open_index_reader(path)) as conn:
        yield conn


def all_pages(conn: sqlite3.Connection, query: StudyQuery, limit: int) -> list[int]:
    ids: list[int] = []
    after = None
    while True:
        page = find_studies(conn, query, after, limit)
        ids.extend(row.id for row in page.rows)
        if page.next_key is None:
            return ids
        after = page.next_key


def test_newest_first_and_every_study_once(big_index: sqlite3.Connection) -> None:
    ids = all_pages(big_index, StudyQuery(), 500)
    assert len(ids) == len(set(ids)) == STUDIES
    rows = big_index.execute(
        "SELECT id FROM studies ORDER BY study_date DESC, study_time DESC, id"
    ).fetchall()
    assert ids == [row[0] for row in rows]


def test_paging_deep_is_as_fast_as_the_first_page(
    big_index: sqlite3.Connection,
) -> None:
    first = find_studies(big_index, StudyQuery(), None, 50)
    deep = PageKey.decode(first.next_key.encode())  # type: ignore[union-attr]
    for _ in range(400):
        deep = find_studies(big_index, StudyQuery(), deep, 50).next_key  # type: ignore[assignment]

    timings = []
    for key in (None, deep):
        started = time.perf_counter()
        for _ in range(20):
            find_studies(big_index, StudyQuery(), key, 50)
        timings.append((time.perf_counter() - started) / 20)
    assert max(timings) < 0.02, timings


def test_unfiltered_list_reads_the_date_index(big_index: sqlite3.Connection) -> None:
    plan = big_index.execute(
        "EXPLAIN QUERY PLAN SELECT s.id FROM studies s JOIN patients p"
        " ON p.id = s.patient_ref ORDER BY s.study_date DESC, s.study_time DESC,"
        " s.id ASC LIMIT 51"
    ).fetchall()
    text = " ".join(str(row[3]) for row in plan)
    assert "studies_by_date" in text and "TEMP B-TREE" not in text


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            StudyQuery(name="given4 patient8123"),
            lambda n: n % 9000 == 8123 and n % 7 == 4,
        ),
        (
            StudyQuery(patient_id="ID0012"),
            lambda n: f"{n % 9000:05d}".startswith("0012"),
        ),
        (StudyQuery(accession="A02999"), lambda n: f"{n:06d}".startswith("02999")),
        (StudyQuery(description="thyr"), lambda n: n % 3 == 0),
    ],
)
def test_filters(big_index: sqlite3.Connection, query: StudyQuery, expected) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    found = all_pages(big_index, query, 50)
    assert time.perf_counter() - started < 2.0
    rows = big_index.execute("SELECT id, study_uid FROM studies").fetchall()
    wanted = {row[0] for row in rows if expected(int(row[1].rsplit(".", 1)[1]))}
    assert set(found) == wanted


def test_search_is_fast_on_thirty_thousand(big_index: sqlite3.Connection) -> None:
    for query in (
        StudyQuery(name="patient8999"),
        StudyQuery(patient_id="ID08999"),
        StudyQuery(date_from="20200101", date_to="20200131"),
    ):
        started = time.perf_counter()
        find_studies(big_index, query, None, 50)
        assert time.perf_counter() - started < 0.25, query


def test_date_range(big_index: sqlite3.Connection) -> None:
    rows = all_pages(
        big_index, StudyQuery(date_from="20200101", date_to="20200630"), 100
    )
    dates = {
        r[0]
        for r in big_index.execute(
            f"SELECT study_date FROM studies WHERE id IN ({','.join(map(str, rows))})"
        )
    }
    assert dates and all("20200101" <= d <= "20200630" for d in dates)


def test_office_archive_rows(app: object, archive: Archive) -> None:
    with closing(open_index_reader(archive.data_dir / "index.db")) as conn:
        rows = find_studies(conn, StudyQuery(name="doe")).rows
        assert rows[0].study_uid == archive.today_study  # today's on top
        jane = rows[0]
        # one image and one clip; the structured report is neither
        assert (jane.image_count, jane.clip_count) == (1, 1)
        assert jane.in_conflict
        assert {r.study_uid for r in rows} == {
            archive.today_study,
            archive.conflict_study,
        }
        richard = find_studies(conn, StudyQuery(patient_id="P002")).rows
        assert [r.in_conflict for r in richard] == [False]
        assert (
            find_studies(conn, StudyQuery(modality="US", accession="ACC2")).rows
            == richard
        )
        assert not find_studies(conn, StudyQuery(modality="U")).rows


def test_bad_dates_and_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        StudyQuery(date_from="2020-01-01")
    with pytest.raises(ValueError):
        PageKey.decode("nonsense")
    key = PageKey("20200101", "101010.5", 7)
    assert PageKey.decode(key.encode()) == key
