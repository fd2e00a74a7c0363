"""The SQL behind Query/Retrieve: C-FIND keys as parameterised WHERE clauses.

A query names a level (PATIENT, STUDY, SERIES, IMAGE) and the keys that
constrain it, each with its VR and values, as PS3.4 C.2.2.2 reads them:
single value, wildcard (``*``, ``?``), range (``A-B`` on dates and times),
list of UIDs. Keys of the level and of the levels above it are matched in
SQL; the SQL text comes only from the tables below and values only ever
travel as parameters. The DICOM layer matches each row once more exactly
(:mod:`appliance.dicom.matching`), so this SQL may return a little more than
asked (never less).

Identity is kept: every row of ``patients`` is a patient of its own, so two
people who share a PatientID come back as two patients, each with their own
demographics. An instance stored twice with differing content (same SOP
Instance UID) is listed once, as its first copy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from appliance.index.identity import normalise_name

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
RANGE_VRS = frozenset({"DA", "TM", "DT"})


@dataclass(frozen=True)
class Key:
    """One matching key: its keyword, VR and (non-universal) values."""

    keyword: str
    vr: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Search:
    """One C-FIND at one level.

    `counts` adds the Number of ... Related ... attributes; `sample_file`
    adds the storage path of one instance under each row, for attributes
    the index does not keep.
    """

    level: str
    keys: tuple[Key, ...] = ()
    counts: bool = False
    sample_file: bool = False


@dataclass(frozen=True)
class _Column:
    level: str
    expression: str
    kind: str


# Keyword → where it lives. Kinds: text, pn, pn_raw, uid, date, time, int,
# modalities. Only these expressions ever reach the SQL text.
COLUMNS: dict[str, _Column] = {
    "PatientID": _Column("PATIENT", "p.patient_id", "text"),
    "IssuerOfPatientID": _Column("PATIENT", "p.issuer", "text"),
    "PatientName": _Column("PATIENT", "p.name_key", "pn"),
    "PatientBirthDate": _Column("PATIENT", "p.birth_date", "date"),
    "PatientSex": _Column("PATIENT", "p.sex", "text"),
    "StudyInstanceUID": _Column("STUDY", "s.study_uid", "uid"),
    "StudyDate": _Column("STUDY", "s.study_date", "date"),
    "StudyTime": _Column("STUDY", "s.study_time", "time"),
    "AccessionNumber": _Column("STUDY", "s.accession_number", "text"),
    "StudyDescription": _Column("STUDY", "s.description", "text"),
    "ReferringPhysicianName": _Column("STUDY", "s.referring_physician", "pn_raw"),
    "ModalitiesInStudy": _Column("STUDY", "s.id", "modalities"),
    "SeriesInstanceUID": _Column("SERIES", "se.series_uid", "uid"),
    "Modality": _Column("SERIES", "se.modality", "text"),
    "SeriesNumber": _Column("SERIES", "se.series_number", "int"),
    "SeriesDescription": _Column("SERIES", "se.description", "text"),
    "SOPInstanceUID": _Column("IMAGE", "i.sop_uid", "uid"),
    "SOPClassUID": _Column("IMAGE", "i.sop_class_uid", "uid"),
    "InstanceNumber": _Column("IMAGE", "i.instance_number", "int"),
}

_PATIENT = """p.id AS patient_ref, p.patient_id AS PatientID,
    p.issuer AS IssuerOfPatientID, p.name AS PatientName,
    p.birth_date AS PatientBirthDate, p.sex AS PatientSex"""
_STUDY = """s.id AS study_ref, s.study_uid AS StudyInstanceUID,
    s.study_date AS StudyDate, s.study_time AS StudyTime,
    s.accession_number AS AccessionNumber, s.description AS StudyDescription,
    s.referring_physician AS ReferringPhysicianName,
    s.modalities AS ModalitiesInStudy"""
_SERIES = """se.id AS series_ref, se.series_uid AS SeriesInstanceUID,
    se.modality AS Modality, se.series_number AS SeriesNumber,
    se.description AS SeriesDescription"""
_IMAGE = """i.id AS instance_ref, i.sop_uid AS SOPInstanceUID,
    i.sop_class_uid AS SOPClassUID, i.instance_number AS InstanceNumber,
    i.number_of_frames AS NumberOfFrames, i.rows AS Rows, i.columns AS Columns,
    i.transfer_syntax_uid AS transfer_syntax_uid, i.file_path AS file_path"""

_FROM = {
    "PATIENT": "patients p",
    "STUDY": "studies s JOIN patients p ON p.id = s.patient_ref",
    "SERIES": "series se JOIN studies s ON s.id = se.study_ref"
    " JOIN patients p ON p.id = s.patient_ref",
    "IMAGE": "instances i JOIN series se ON se.id = i.series_ref"
    " JOIN studies s ON s.id = se.study_ref JOIN patients p ON p.id = s.patient_ref",
}
_SELECT = {
    "PATIENT": _PATIENT,
    "STUDY": f"{_PATIENT}, {_STUDY}",
    "SERIES": f"{_PATIENT}, {_STUDY}, {_SERIES}",
    "IMAGE": f"{_PATIENT}, {_STUDY}, {_SERIES}, {_IMAGE}",
}
_ORDER = {
    "PATIENT": "p.id",
    "STUDY": "s.study_date, s.study_time, s.id",
    "SERIES": "se.series_number, se.id",
    "IMAGE": "i.instance_number, i.id",
}
# PS3.4 C.3.2-C.3.4 optional return keys: how many lie below each row.
_COUNTS = {
    "PATIENT": """,
    (SELECT count(*) FROM studies c WHERE c.patient_ref = p.id)
        AS NumberOfPatientRelatedStudies,
    (SELECT count(*) FROM series c JOIN studies cs ON cs.id = c.study_ref
        WHERE cs.patient_ref = p.id) AS NumberOfPatientRelatedSeries,
    (SELECT count(DISTINCT c.sop_uid) FROM instances c JOIN series cse
        ON cse.id = c.series_ref JOIN studies cs ON cs.id = cse.study_ref
        WHERE cs.patient_ref = p.id) AS NumberOfPatientRelatedInstances""",
    "STUDY": """,
    (SELECT count(*) FROM series c WHERE c.study_ref = s.id)
        AS NumberOfStudyRelatedSeries,
    (SELECT count(DISTINCT c.sop_uid) FROM instances c JOIN series cse
        ON cse.id = c.series_ref WHERE cse.study_ref = s.id)
        AS NumberOfStudyRelatedInstances""",
    "SERIES": """,
    (SELECT count(DISTINCT c.sop_uid) FROM instances c WHERE c.series_ref = se.id)
        AS NumberOfSeriesRelatedInstances""",
    "IMAGE": "",
}
_SAMPLE = {
    "PATIENT": "",
    "STUDY": """,
    (SELECT c.file_path FROM instances c JOIN series cse ON cse.id = c.series_ref
        WHERE cse.study_ref = s.id ORDER BY c.id LIMIT 1) AS sample_file""",
    "SERIES": """,
    (SELECT c.file_path FROM instances c WHERE c.series_ref = se.id
        ORDER BY c.id LIMIT 1) AS sample_file""",
    "IMAGE": ", i.file_path AS sample_file",
}
_FIRST_COPY = "i.id = (SELECT min(c.id) FROM instances c WHERE c.sop_uid = i.sop_uid)"
_TIME = "substr(replace({0}, ':', '') || '000000', 1, 6)"


def searchable(level: str) -> set[str]:
    """Return the keywords matched in SQL at `level` (its own and above)."""
    depth = LEVELS.index(level)
    return {k for k, c in COLUMNS.items() if LEVELS.index(c.level) <= depth}


def find(conn: sqlite3.Connection, search: Search) -> list[dict[str, Any]]:
    """Run one C-FIND's SQL; return one dict per row, by DICOM keyword.

    Parameters
    ----------
    conn : sqlite3.Connection
        A reader on the index.
    search : Search
        The level and its keys; keys the level cannot match are ignored.

    Raises
    ------
    ValueError
        If the level is not one of :data:`LEVELS`.
    """
    if search.level not in LEVELS:
        raise ValueError(f"unknown query level {search.level!r}")
    conn.create_function("pn_key", 1, _pn_key, deterministic=True)

    allowed = searchable(search.level)
    where = [_FIRST_COPY] if search.level == "IMAGE" else []
    params: list[Any] = []
    for key in search.keys:
        if key.keyword in allowed and key.values:
            clause, values = _condition(COLUMNS[key.keyword], key)
            where.append(clause)
            params.extend(values)

    sql = (
        f"SELECT {_SELECT[search.level]}"
        f"{_COUNTS[search.level] if search.counts else ''}"
        f"{_SAMPLE[search.level] if search.sample_file else ''}"
        f" FROM {_FROM[search.level]}"
        f"{' WHERE ' + ' AND '.join(where) if where else ''}"
        f" ORDER BY {_ORDER[search.level]}"
    )
    return [dict(row) for row in conn.execute(sql, params)]


def stored_instances(
    conn: sqlite3.Connection, sop_uids: Iterable[str]
) -> dict[str, set[str]]:
    """Return the SOP Class UIDs indexed under each given SOP Instance UID.

    An instance is in the index only once it is durably stored and indexed,
    which is what Storage Commitment promises (PS3.4 J.3.3).
    """
    found: dict[str, set[str]] = {}
    for uid in sop_uids:
        rows = conn.execute(
            "SELECT DISTINCT sop_class_uid FROM instances WHERE sop_uid = ?", (uid,)
        ).fetchall()
        if rows:
            found[uid] = {str(row[0]) for row in rows}
    return found


def has_wildcard(vr: str, value: str) -> bool:
    """Tell whether `value` asks for wildcard matching (PS3.4 C.2.2.2.4)."""
    return vr in WILDCARD_VRS and ("*" in value or "?" in value)


def is_range(vr: str, value: str) -> bool:
    """Tell whether `value` asks for range matching (PS3.4 C.2.2.2.5)."""
    if vr not in RANGE_VRS or "-" not in value:
        return False
    # A DT may carry a UTC offset (&ZZXX, PS3.5 6.2); a range has one dash.
    return vr != "DT" or value.count("-") == 1


def range_bounds(vr: str, value: str) -> tuple[str, str]:
    """Split a range into comparable (low, high) bounds; empty is open.

    Times become ``HHMMSS.FFFFFF``: ``1200`` means 12:00:00.000000 as a lower
    bound and 12:00:59.999999 as an upper one.
    """
    low, _, high = value.partition("-")
    low, high = low.strip(), high.strip()
    if vr == "TM":
        return _time_bound(low, "000000.000000"), _time_bound(high, "595959.999999")
    if vr == "DT" and high:
        return low, high + "99999999999999.999999"[len(high) :]
    return low, high


def normalise_time(value: str) -> str:
    """Return a TM value as ``HHMMSS.FFFFFF``, for comparing."""
    whole, _, fraction = value.replace(":", "").partition(".")
    return whole.ljust(6, "0")[:6] + "." + fraction.ljust(6, "0")[:6]


def _condition(column: _Column, key: Key) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for value in key.values:
        clause, values = _one_value(column, key.vr, value)
        parts.append(clause)
        params.extend(values)
    return "(" + " OR ".join(parts) + ")", params


def _one_value(column: _Column, vr: str, value: str) -> tuple[str, list[Any]]:
    expr, kind = column.expression, column.kind
    if kind in ("date", "time") and is_range(vr, value):
        low, high = range_bounds(vr, value)
        target = _TIME.format(expr) if kind == "time" else expr
        clause, params = f"({expr} != ''", []
        if low:
            clause, params = (
                f"{clause} AND {target} >= ?",
                [low[:6] if kind == "time" else low],
            )
        if high:
            clause += f" AND {target} <= ?"
            params.append(high[:6] if kind == "time" else high)
        return clause + ")", params
    if kind == "time":
        return f"{_TIME.format(expr)} = ?", [normalise_time(value)[:6]]
    if kind == "pn":
        return f"{expr} GLOB ?", [_glob(normalise_name(value))]
    if kind == "pn_raw":
        return f"pn_key({expr}) GLOB ?", [_glob(normalise_name(value))]
    if kind == "modalities":
        return (
            "EXISTS (SELECT 1 FROM series m WHERE m.study_ref = s.id"
            " AND m.modality GLOB ?)",
            [_glob(value)],
        )
    if kind == "int":
        return f"{expr} = ?", [_int_or_none(value)]
    if kind == "text" and has_wildcard(vr, value):
        return f"{expr} GLOB ?", [_glob(value)]
    return f"{expr} = ?", [value]


def _glob(pattern: str) -> str:
    # DICOM's * and ? mean what GLOB's do; GLOB's [ is taken literally.
    return pattern.replace("[", "[[]")


def _time_bound(value: str, padding: str) -> str:
    if not value:
        return ""
    whole, _, fraction = value.replace(":", "").partition(".")
    whole = (whole + padding[len(whole) : 6])[:6]
    fraction = (fraction + padding[7 + len(fraction) :])[:6]
    return f"{whole}.{fraction}"


def _int_or_none(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _pn_key(value: object) -> str:
    return normalise_name(str(value or ""))
