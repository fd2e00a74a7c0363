"""People's identity decisions, kept in ``app.db``, and the rules made of them.

A decision is only ever added. It names patient records by the
demographics they showed when the person decided, and studies by Study
Instance UID (see :mod:`appliance.index.identity_rules`), so it holds
however often the index is rebuilt. An undo is a decision of its own,
kind ``undo``, that names the decision it undoes; the undone one stays in
the history, marked. Only decisions not undone are in force.

:func:`load_identity_rules` turns ``app.db`` into what ingest applies:
each registered modality's default issuer, the worklist by accession
number, and the decisions in force. :class:`IdentityRulesSource` keeps
that snapshot for the index writer and reads it again only when ``app.db``
changed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance import db
from appliance.index.identity import Demographics
from appliance.index.identity_rules import (
    DecisionKind,
    IdentityDecision,
    IdentityRules,
)
from appliance.state.modalities import list_modalities
from appliance.state.worklist import list_entries

UNDO = "undo"
TYPED = frozenset({DecisionKind.CORRECT, DecisionKind.NEW_PATIENT})
_SEXES = ("", "M", "F", "O")


@dataclass(frozen=True)
class DecisionEntry:
    """One row of the decision history, an undo included."""

    id: int
    kind: str
    records: tuple[Demographics, ...]
    result: Demographics | None
    study_uid: str
    undoes: int | None
    undone_by: int | None
    note: str
    made_by: str
    made_at: str

    @property
    def in_force(self) -> bool:
        """True for a decision that is not an undo and was not undone."""
        return self.kind != UNDO and self.undone_by is None

    def as_decision(self) -> IdentityDecision:
        """The decision as the index applies it.

        Raises
        ------
        ValueError
            For an undo, which the index never applies.
        """
        if self.kind == UNDO:
            raise ValueError(f"decision {self.id} is an undo")
        return IdentityDecision(
            id=self.id,
            kind=DecisionKind(self.kind),
            records=self.records,
            result=self.result,
            study_uid=self.study_uid,
            made_at=self.made_at,
        )


def checked_demographics(demographics: Demographics) -> Demographics:
    """Return demographics trimmed and checked, as a decision may hold them.

    Raises
    ------
    ValueError
        Naming the first field a DICOM header could not hold (PS3.5 6.2: ID
        and issuer LO, 64 characters; name PN; birth date DA; sex CS).
    """
    values = {
        "patient_id": _text("patient_id", demographics.patient_id, 64),
        "issuer": _text("issuer", demographics.issuer, 64),
        "name": _text("name", demographics.name, 64 * 5 + 4),
        "birth_date": _text("birth_date", demographics.birth_date, 8),
        "sex": _text("sex", demographics.sex, 1).upper(),
    }
    if not values["patient_id"]:
        raise ValueError("patient_id: a patient ID is required")
    if not values["name"].strip("^ "):
        raise ValueError("name: a name is required, e.g. DOE^JANE")
    birth = values["birth_date"]
    if birth and not _is_date(birth):
        raise ValueError(f"birth_date: expected YYYYMMDD, got {birth!r}")
    if values["sex"] not in _SEXES:
        raise ValueError(f"sex: expected M, F, O or nothing, got {values['sex']!r}")
    return Demographics(**values)


def record_decision(
    conn: sqlite3.Connection,
    kind: DecisionKind,
    records: Iterable[Demographics],
    made_by: str,
    *,
    result: Demographics | None = None,
    study_uid: str = "",
    note: str = "",
) -> DecisionEntry:
    """Add a decision; the caller owns the transaction (``BEGIN IMMEDIATE``).

    Parameters
    ----------
    conn : sqlite3.Connection
        A writable ``app.db`` connection.
    kind : DecisionKind
        What was decided.
    records : iterable of Demographics
        The records decided about, as the person saw them.
    made_by : str
        The user's name.
    result : Demographics, optional
        The chosen, corrected or target demographics.
    study_uid : str
        The study moved, for a move.
    note : str
        Why, in the person's words (no more than 500 characters kept).

    Raises
    ------
    ValueError
        If the decision is not complete for its kind, or typed details (a
        correction, a new patient) could not be held by a DICOM header.
    """
    named = tuple(records)
    _check_shape(kind, named, result, study_uid)
    # Typed details are checked; a merge or a move copies a record's own.
    if result is not None and kind in TYPED:
        result = checked_demographics(result)
    cursor = conn.execute(
        "INSERT INTO identity_decisions (kind, records, result, study_uid, note,"
        " made_by, made_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            kind.value,
            json.dumps([asdict(record) for record in named]),
            "" if result is None else json.dumps(asdict(result)),
            study_uid,
            note.strip()[:500],
            made_by,
            _now(),
        ),
    )
    decision_id = int(cursor.lastrowid or 0)
    _index_patient_ids(conn, decision_id, named, result)
    found = get_decision(conn, decision_id)
    assert found is not None
    return found


def record_undo(
    conn: sqlite3.Connection, decision_id: int, made_by: str, note: str = ""
) -> tuple[DecisionEntry, DecisionEntry]:
    """Undo a decision in force; the caller owns the transaction.

    Returns
    -------
    tuple of DecisionEntry
        The undone decision (as it was) and the undo.

    Raises
    ------
    ValueError
        If there is no such decision, it is an undo, or it was undone already.
    """
    undone = get_decision(conn, decision_id)
    if undone is None:
        raise ValueError(f"there is no identity decision {decision_id}")
    if not undone.in_force:
        raise ValueError(f"decision {decision_id} is an undo or was undone already")
    cursor = conn.execute(
        "INSERT INTO identity_decisions (kind, study_uid, undoes, note, made_by,"
        " made_at) VALUES (?, ?, ?, ?, ?, ?)",
        (UNDO, undone.study_uid, decision_id, note.strip()[:500], made_by, _now()),
    )
    undo_id = int(cursor.lastrowid or 0)
    conn.execute(
        "UPDATE identity_decisions SET undone_by = ? WHERE id = ?",
        (undo_id, decision_id),
    )
    _index_patient_ids(conn, undo_id, undone.records, undone.result)
    undo = get_decision(conn, undo_id)
    assert undo is not None
    return undone, undo


def get_decision(conn: sqlite3.Connection, decision_id: int) -> DecisionEntry | None:
    """Return one decision (or undo) by its number, or None."""
    row = conn.execute(
        "SELECT * FROM identity_decisions WHERE id = ?", (decision_id,)
    ).fetchone()
    return None if row is None else _entry(row)


def decisions_in_force(conn: sqlite3.Connection) -> list[IdentityDecision]:
    """Return every decision not undone, oldest first, as the index applies them."""
    rows = conn.execute(
        "SELECT * FROM identity_decisions WHERE kind != ? AND undone_by IS NULL"
        " ORDER BY id",
        (UNDO,),
    ).fetchall()
    return [_entry(row).as_decision() for row in rows]


def history(
    conn: sqlite3.Connection,
    patient_ids: Iterable[str] = (),
    study_uids: Iterable[str] = (),
) -> list[DecisionEntry]:
    """Return decisions and undos about some patient IDs or studies, newest first."""
    ids, studies = sorted(set(patient_ids)), sorted(set(study_uids))
    if not ids and not studies:
        return []
    id_marks, study_marks = ",".join("?" * len(ids)), ",".join("?" * len(studies))
    rows = conn.execute(
        "SELECT * FROM identity_decisions WHERE id IN"
        f" (SELECT decision_ref FROM identity_decision_patients"
        f"  WHERE patient_id IN ({id_marks}))"
        f" OR (study_uid != '' AND study_uid IN ({study_marks}))"
        " ORDER BY id DESC",
        (*ids, *studies),
    ).fetchall()
    return [_entry(row) for row in rows]


def load_identity_rules(conn: sqlite3.Connection) -> IdentityRules:
    """Read what ingest applies: default issuers, worklist and decisions."""
    issuers = {
        modality.ae_title: modality.default_issuer
        for modality in list_modalities(conn)
        if modality.default_issuer
    }
    worklist = {
        entry.accession_number: Demographics(
            patient_id=entry.patient_id,
            issuer=entry.issuer,
            name=entry.patient_name,
            birth_date=entry.birth_date,
            sex=entry.sex,
        )
        for entry in list_entries(conn, include_done=True)
    }
    return IdentityRules(issuers, worklist, decisions_in_force(conn))


def read_identity_rules(app_db: Path) -> IdentityRules:
    """Read the rules from ``app.db`` on a short-lived connection (none: empty)."""
    if not app_db.exists():
        return IdentityRules()
    with closing(db.connect(app_db, readonly=True)) as conn:
        return load_identity_rules(conn)


class IdentityRulesSource:
    """The identity rules for the index writer, read again when ``app.db`` changes.

    ``PRAGMA data_version`` on a kept read-only connection tells whether any
    other connection (the web, a command) committed since the last read, so
    a store costs one pragma, not three queries. Thread-safe.

    Parameters
    ----------
    app_db : pathlib.Path
        The state database; opened on first use.
    """

    def __init__(self, app_db: Path) -> None:
        self._app_db = app_db
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._version: int | None = None
        self._rules = IdentityRules()

    def __call__(self) -> IdentityRules:
        """Return the rules in force now."""
        with self._lock:
            if self._conn is None:
                self._conn = db.connect(self._app_db, readonly=True)
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            if version != self._version:
                self._rules = load_identity_rules(self._conn)
                self._version = version
            return self._rules

    def close(self) -> None:
        """Close the kept connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._version = None


def _check_shape(
    kind: DecisionKind,
    records: tuple[Demographics, ...],
    result: Demographics | None,
    study_uid: str,
) -> None:
    """Refuse a decision that lacks what its kind needs, or has too much."""
    moves = kind in (DecisionKind.MOVE_STUDY, DecisionKind.NEW_PATIENT)
    if kind is DecisionKind.DIFFERENT_PEOPLE:
        problem = "" if len(records) == 2 and result is None else "two records"
    elif kind is DecisionKind.SAME_PERSON:
        problem = "" if len(records) >= 2 and result else "two records and a result"
    else:
        problem = "" if len(records) == 1 and result else "one record and a result"
    if not problem and moves != bool(study_uid):
        problem = "a study" if moves else "no study"
    if problem:
        raise ValueError(f"a {kind.value} decision needs {problem}")


def _index_patient_ids(
    conn: sqlite3.Connection,
    decision_id: int,
    records: Iterable[Demographics],
    result: Demographics | None,
) -> None:
    ids = {record.patient_id for record in records}
    if result is not None:
        ids.add(result.patient_id)
    conn.executemany(
        "INSERT OR IGNORE INTO identity_decision_patients (patient_id, decision_ref)"
        " VALUES (?, ?)",
        [(patient_id, decision_id) for patient_id in sorted(ids)],
    )


def _entry(row: sqlite3.Row) -> DecisionEntry:
    return DecisionEntry(
        id=int(row["id"]),
        kind=row["kind"],
        records=tuple(_demographics(item) for item in json.loads(row["records"])),
        result=_demographics(json.loads(row["result"])) if row["result"] else None,
        study_uid=row["study_uid"],
        undoes=row["undoes"],
        undone_by=row["undone_by"],
        note=row["note"],
        made_by=row["made_by"],
        made_at=row["made_at"],
    )


def _demographics(values: dict[str, Any]) -> Demographics:
    return Demographics(
        patient_id=str(values["patient_id"]),
        issuer=str(values["issuer"]),
        name=str(values["name"]),
        birth_date=str(values["birth_date"]),
        sex=str(values["sex"]),
    )


def _text(name: str, value: str, limit: int) -> str:
    text = (value or "").strip()
    if len(text) > limit:
        raise ValueError(f"{name}: at most {limit} characters, got {len(text)}")
    if "\\" in text or any(ord(char) < 32 for char in text):
        raise ValueError(f"{name}: no backslash or control character allowed")
    return text


def _is_date(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return False
    return len(text) == 8


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
