"""Finding and opening studies for the web: the study list and a study's parts.

The list is paged by key (the last row's study date, time and row id), not by
``OFFSET``, so page 500 costs what page 1 costs. Its order, newest study date
first with today's studies on top, is the order of ``studies_by_date``, so an
unfiltered page reads just the rows it shows.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from appliance.index.identity import normalise_name

_NAME_SPLIT = re.compile(r"[\s^,]+")
_DATE = re.compile(r"^\d{8}$")

_STUDY_COLUMNS = """
    s.id, s.study_uid, s.study_date, s.study_time, s.accession_number,
    s.description, s.modalities, s.image_count, s.clip_count,
    s.referring_physician, p.id AS patient_ref, p.patient_id, p.issuer,
    p.name AS patient_name, p.birth_date, p.sex
"""

_INSTANCE_COLUMNS = """
    i.id, i.sop_uid, i.sop_class_uid, i.transfer_syntax_uid, i.instance_number,
    i.number_of_frames, i.rows, i.columns, i.photometric, i.file_path,
    i.file_size, i.sha256, i.has_differing_copy, se.series_uid,
    se.series_number, se.description AS series_description, se.modality,
    st.id AS study_ref, st.study_uid, p.patient_id
"""


@dataclass(frozen=True)
class StudyQuery:
    """What the study list is filtered by; empty fields do not filter.

    Dates are ``YYYYMMDD`` (DICOM DA, PS3.5 6.2). The name matches when
    every word of it appears in the patient's name, in any order and case;
    the patient ID and accession number match from their start.
    """

    name: str = ""
    patient_id: str = ""
    date_from: str = ""
    date_to: str = ""
    accession: str = ""
    modality: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        for label, value in (("date_from", self.date_from), ("date_to", self.date_to)):
            if value and not _DATE.match(value):
                raise ValueError(f"{label} must be YYYYMMDD, got {value!r}")


@dataclass(frozen=True)
class PageKey:
    """Where the next page of the study list starts (after this row)."""

    study_date: str
    study_time: str
    study_ref: int

    def encode(self) -> str:
        """Return the key as one URL-safe token."""
        return f"{self.study_date}.{self.study_time}.{self.study_ref}"

    @classmethod
    def decode(cls, token: str) -> PageKey:
        """Read a key written by :meth:`encode`.

        Raises
        ------
        ValueError
            If the token is malformed.
        """
        parts = token.rsplit(".", 1)
        head = parts[0].split(".", 1) if len(parts) == 2 else []
        if len(head) != 2 or not parts[1].isdigit():
            raise ValueError(f"not a page key: {token!r}")
        return cls(head[0], head[1], int(parts[1]))


@dataclass(frozen=True)
class StudySummary:
    """One row of the study list."""

    id: int
    study_uid: str
    study_date: str
    study_time: str
    accession_number: str
    description: str
    modalities: str
    image_count: int
    clip_count: int
    referring_physician: str
    patient_ref: int
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    in_conflict: bool


@dataclass(frozen=True)
class StudyPage:
    """A page of the study list and the key of the next one, if any."""

    rows: list[StudySummary]
    next_key: PageKey | None


@dataclass(frozen=True)
class InstanceEntry:
    """What the web needs to show, render or hand out one stored instance."""

    id: int
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    instance_number: int | None
    number_of_frames: int
    rows: int | None
    columns: int | None
    photometric: str
    file_path: str
    file_size: int
    sha256: str
    has_differing_copy: bool
    series_uid: str
    series_number: int | None
    series_description: str
    modality: str
    study_ref: int
    study_uid: str
    patient_id: str


@dataclass
class SeriesEntry:
    """A series of a study with its instances, in instance-number order."""

    series_uid: str
    series_number: int | None
    description: str
    modality: str
    instances: list[InstanceEntry] = field(default_factory=list)


def find_studies(
    conn: sqlite3.Connection,
    query: StudyQuery,
    after: PageKey | None = None,
    limit: int = 50,
) -> StudyPage:
    """Return one page of studies matching `query`, newest study date first.

    Parameters
    ----------
    conn : sqlite3.Connection
        A reader's connection to ``index.db``.
    query : StudyQuery
        The filters.
    after : PageKey, optional
        The key of the previous page's last row; None for the first page.
    limit : int
        Rows per page.

    Returns
    -------
    StudyPage
    """
    where, params = _filters(query)
    if after is not None:
        # Matches the index order: date and time descending, row id ascending.
        where.append(
            "s.study_date <= :k_date AND (s.study_date < :k_date"
            " OR (s.study_date = :k_date AND (s.study_time < :k_time"
            " OR (s.study_time = :k_time AND s.id > :k_id))))"
        )
        params.update(
            k_date=after.study_date, k_time=after.study_time, k_id=after.study_ref
        )

    sql = (
        f"SELECT {_STUDY_COLUMNS} FROM studies s"
        " JOIN patients p ON p.id = s.patient_ref"
        f" {'WHERE ' + ' AND '.join(where) if where else ''}"
        " ORDER BY s.study_date DESC, s.study_time DESC, s.id ASC LIMIT :limit"
    )
    params["limit"] = limit + 1
    rows = _summaries(conn, conn.execute(sql, params).fetchall())

    next_key = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_key = PageKey(last.study_date, last.study_time, last.id)
    return StudyPage(rows, next_key)


def get_study(conn: sqlite3.Connection, study_uid: str) -> StudySummary | None:
    """Return one study by its Study Instance UID, or None."""
    rows = conn.execute(
        f"SELECT {_STUDY_COLUMNS} FROM studies s"
        " JOIN patients p ON p.id = s.patient_ref WHERE s.study_uid = ?",
        (study_uid,),
    ).fetchall()
    found = _summaries(conn, rows)
    return found[0] if found else None


def study_series(conn: sqlite3.Connection, study_ref: int) -> list[SeriesEntry]:
    """Return a study's series, each with its instances, in display order."""
    series: dict[str, SeriesEntry] = {}
    for instance in _instances(conn, "st.id = ?", (study_ref,)):
        entry = series.get(instance.series_uid)
        if entry is None:
            entry = SeriesEntry(
                instance.series_uid,
                instance.series_number,
                instance.series_description,
                instance.modality,
            )
            series[instance.series_uid] = entry
        entry.instances.append(instance)
    return list(series.values())


def get_instance(conn: sqlite3.Connection, instance_ref: int) -> InstanceEntry | None:
    """Return one stored instance by its index row id, or None."""
    found = list(_instances(conn, "i.id = ?", (instance_ref,)))
    return found[0] if found else None


def study_instances(conn: sqlite3.Connection, study_ref: int) -> list[InstanceEntry]:
    """Return every stored instance of a study, in display order."""
    return list(_instances(conn, "st.id = ?", (study_ref,)))


def _instances(
    conn: sqlite3.Connection, where: str, params: tuple[Any, ...]
) -> Iterator[InstanceEntry]:
    cursor = conn.execute(
        f"SELECT {_INSTANCE_COLUMNS} FROM instances i"
        " JOIN series se ON se.id = i.series_ref"
        " JOIN studies st ON st.id = se.study_ref"
        " JOIN patients p ON p.id = i.patient_ref"
        f" WHERE {where}"
        " ORDER BY se.series_number IS NULL, se.series_number, se.id,"
        " i.instance_number IS NULL, i.instance_number, i.id",
        params,
    )
    for row in cursor:
        values = dict(row)
        values["has_differing_copy"] = bool(values["has_differing_copy"])
        yield InstanceEntry(**values)


def _filters(query: StudyQuery) -> tuple[list[str], dict[str, Any]]:
    where: list[str] = []
    params: dict[str, Any] = {}

    # Each word of the name must appear in the normalised name (PS3.5 6.2.1).
    words = [w for w in _NAME_SPLIT.split(normalise_name(query.name)) if w]
    for number, word in enumerate(words):
        where.append(f"p.name_key LIKE :name{number} ESCAPE '\\'")
        params[f"name{number}"] = f"%{_like_escape(word)}%"

    # Prefixes as ranges, so that the indexes on these columns are used.
    if query.patient_id.strip():
        where.append("p.patient_id >= :pid_low AND p.patient_id < :pid_high")
        params.update(_prefix_range("pid", query.patient_id.strip()))
    if query.accession.strip():
        where.append(
            "s.accession_number >= :acc_low AND s.accession_number < :acc_high"
        )
        params.update(_prefix_range("acc", query.accession.strip()))

    if query.date_from:
        where.append("s.study_date >= :date_from")
        params["date_from"] = query.date_from
    if query.date_to:
        where.append("s.study_date <= :date_to AND s.study_date != ''")
        params["date_to"] = query.date_to
    if query.modality.strip():
        where.append("instr('\\' || s.modalities || '\\', :modality) > 0")
        params["modality"] = f"\\{query.modality.strip().upper()}\\"
    if query.description.strip():
        where.append("s.description LIKE :description ESCAPE '\\'")
        params["description"] = f"%{_like_escape(query.description.strip())}%"
    return where, params


def _prefix_range(label: str, prefix: str) -> dict[str, str]:
    return {f"{label}_low": prefix, f"{label}_high": prefix + "\U0010ffff"}


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _summaries(conn: sqlite3.Connection, rows: list[sqlite3.Row]) -> list[StudySummary]:
    conflicted = _in_conflict(conn, {int(row["patient_ref"]) for row in rows})
    return [
        StudySummary(**dict(row), in_conflict=row["patient_ref"] in conflicted)
        for row in rows
    ]


def _in_conflict(conn: sqlite3.Connection, patients: set[int]) -> set[int]:
    """Return which of `patients` are part of an identity conflict.

    One query for the whole page: ``identity_conflicts`` is indexed on
    ``patient_a`` only, so a per-row test of ``patient_b`` would scan the
    table once for every row shown.
    """
    if not patients:
        return set()
    marks = ",".join("?" * len(patients))
    found = conn.execute(
        f"SELECT patient_a, patient_b FROM identity_conflicts"
        f" WHERE patient_a IN ({marks}) OR patient_b IN ({marks})",
        (*patients, *patients),
    ).fetchall()
    return {int(side) for row in found for side in row} & patients
