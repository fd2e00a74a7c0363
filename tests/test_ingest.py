"""Adding instances to the index: patients, studies, duplicates, conflicts."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.index import Outcome, open_index, queries
from appliance.index.ingest import add_instance
from tests.index_helpers import record_of


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = open_index(tmp_path / "index.db")
    yield connection
    connection.close()


def _add(conn: sqlite3.Connection, record):  # type: ignore[no-untyped-def]
    conn.execute("BEGIN IMMEDIATE")
    result = add_instance(conn, record)
    conn.execute("COMMIT")
    return result


def test_instances_of_one_study_share_patient_study_series(
    conn: sqlite3.Connection, ultrasound_files: dict[str, Path]
) -> None:
    first = record_of(ultrasound_files["ge_rgb"])
    second = dataclasses.replace(
        first, sop_instance_uid="1.2.3.4", sha256="b" * 64, file_path="x/second.dcm"
    )

    assert _add(conn, first).outcome is Outcome.ADDED
    assert _add(conn, second).outcome is Outcome.ADDED
    counts = queries.counts(conn)

    assert (counts.patients, counts.studies, counts.series, counts.instances) == (
        1,
        1,
        1,
        2,
    )
    study = conn.execute("SELECT * FROM studies").fetchone()
    assert (study["image_count"], study["clip_count"]) == (2, 0)
    assert study["modalities"] == "US"


def test_a_cine_clip_counts_as_a_clip(
    conn: sqlite3.Connection, ultrasound_files: dict[str, Path]
) -> None:
    _add(conn, record_of(ultrasound_files["sonosite_cine"]))

    study = conn.execute("SELECT * FROM studies").fetchone()
    assert (study["image_count"], study["clip_count"]) == (0, 1)


def test_identical_resend_adds_nothing(
    conn: sqlite3.Connection, ultrasound_files: dict[str, Path]
) -> None:
    record = record_of(ultrasound_files["ge_rgb"])
    first = _add(conn, record)
    again = _add(conn, dataclasses.replace(record, file_path="other/day.dcm"))

    assert again.outcome is Outcome.IDENTICAL
    assert again.existing_path == record.file_path
    assert again.instance_row == first.instance_row
    assert queries.counts(conn).instances == 1


def test_same_uid_other_content_keeps_both_flagged(
    conn: sqlite3.Connection, ultrasound_files: dict[str, Path]
) -> None:
    record = record_of(ultrasound_files["ge_rgb"])
    _add(conn, record)
    other = dataclasses.replace(record, sha256="c" * 64, file_path="x/other.dcm")

    assert _add(conn, other).outcome is Outcome.ADDED_DIFFERING_COPY
    copies = queries.instances_with_uid(conn, record.sop_instance_uid)
    assert [row["has_differing_copy"] for row in copies] == [1, 1]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"patient_birth_date": "19700101"}, "birth_date"),
        ({"patient_sex": "M"}, "sex"),
        ({"patient_name": "Roe^John"}, "name"),
        ({"issuer_of_patient_id": "OTHER-SITE"}, "issuer"),
    ],
)
def test_same_id_other_person_is_a_second_record_and_a_conflict(
    conn: sqlite3.Connection,
    ultrasound_files: dict[str, Path],
    change: dict,
    field: str,
) -> None:
    woman = record_of(
        ultrasound_files["philips_palette"],
        patient_id="4711",
        patient_name="Doe^Jane",
        patient_birth_date="19900101",
        patient_sex="F",
    )
    other = record_of(
        ultrasound_files["ge_rgb"],
        patient_id="4711",
        patient_name="Doe^Jane",
        patient_birth_date="19900101",
        patient_sex="F",
    )
    other = dataclasses.replace(other, **change)

    _add(conn, woman)
    _add(conn, other)

    patients = queries.patients_with_id(conn, "4711")
    assert len(patients) == 2
    conflicts = queries.conflicts(conn)
    assert len(conflicts) == 1
    assert conflicts[0]["fields"] == field


def test_name_variants_and_missing_values_join_one_record(
    conn: sqlite3.Connection, ultrasound_files: dict[str, Path]
) -> None:
    base = {"patient_id": "77", "patient_birth_date": "", "patient_sex": ""}
    _add(conn, record_of(ultrasound_files["ge_rgb"], patient_name="Doe^Jane", **base))
    _add(
        conn,
        record_of(
            ultrasound_files["ge_rgb"],
            patient_id="77",
            patient_name=" DOE^jane^^",
            patient_birth_date="19900101",
            patient_sex="F",
        ),
    )

    patients = queries.patients_with_id(conn, "77")
    assert len(patients) == 1
    assert (patients[0]["birth_date"], patients[0]["sex"]) == ("19900101", "F")
    assert queries.conflicts(conn) == []


def test_a_study_whose_instances_name_two_people_raises_a_conflict(
    conn: sqlite3.Connection, ultrasound_files: dict[str, Path]
) -> None:
    first = record_of(ultrasound_files["ge_rgb"], patient_id="1", patient_sex="F")
    second = dataclasses.replace(
        first,
        sop_instance_uid="1.2.9",
        sha256="d" * 64,
        file_path="x/2.dcm",
        patient_sex="M",
    )

    _add(conn, first)
    _add(conn, second)

    assert queries.counts(conn).studies == 1
    assert len(queries.conflicts(conn)) == 1


def test_a_report_is_neither_image_nor_clip(
    conn: sqlite3.Connection, ultrasound_files: dict[str, Path]
) -> None:
    image = record_of(ultrasound_files["ge_rgb"])
    report = dataclasses.replace(
        image,
        sop_instance_uid="1.2.77",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33",
        sha256="e" * 64,
        file_path="x/report.dcm",
        rows=None,
        columns=None,
        modality="SR",
    )

    _add(conn, image)
    _add(conn, report)

    study = conn.execute("SELECT * FROM studies").fetchone()
    assert (study["image_count"], study["clip_count"]) == (1, 0)
    assert study["modalities"] == "SR\\US"
