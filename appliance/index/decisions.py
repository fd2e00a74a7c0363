"""Applying people's identity decisions to the patient rows of an index.

A decision (see :mod:`appliance.index.identity_rules`) names records by
their demographics and studies by UID, never by row id, so the same
decisions apply to the live index when they are made and to a rebuilt one:
a rebuild indexes every file as it says (with default issuers and the
worklist), then calls :func:`apply_identity_decisions` with every decision
in force, oldest first, before the new index replaces the old.

Each kind works on rows as follows:

- same person, correction: the rows that fit the records decided about
  (and any row already showing the result exactly) become one row with the
  chosen demographics; studies, instances and conflicts follow it;
- different people: conflicts between rows fitting the two records close;
- move a study (to a record, or to a new patient): the study and all its
  instances go to the row showing the target, made if need be; a record
  left with nothing is dropped.

After a change of demographics the row's conflicts are worked out again:
records that share its ID and differ are a conflict, unless decided to be
different people. Conflicts a decision raises carry the source
``"decision"`` and the decision's time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from appliance.index.identity import Demographics, disagreements
from appliance.index.identity_rules import (
    DecisionKind,
    DistinctPairs,
    IdentityDecision,
    differences,
    fits,
    same_demographics,
)

__all__ = ["IdentityDecision", "apply_identity_decisions"]

DECISION_SOURCE = "decision"


@dataclass(frozen=True)
class _Step:
    """One decision being applied, with what it needs to know."""

    conn: sqlite3.Connection
    decision: IdentityDecision
    distinct: DistinctPairs
    scope: Collection[str] | None

    def in_scope(self, patient_id: str) -> bool:
        return self.scope is None or patient_id in self.scope


def apply_identity_decisions(
    conn: sqlite3.Connection,
    decisions: Sequence[IdentityDecision],
    *,
    prior: Sequence[IdentityDecision] = (),
    scope: Collection[str] | None = None,
) -> int:
    """Apply identity decisions to an index; the caller owns the transaction.

    Parameters
    ----------
    conn : sqlite3.Connection
        A writable connection to the index.
    decisions : Sequence[IdentityDecision]
        The decisions to apply, oldest first.
    prior : Sequence[IdentityDecision]
        Decisions already applied to this index (for a decision made on the
        live index): they say which records are different people.
    scope : collection of str, optional
        Only touch patient records with these PatientIDs (a re-derived part
        of the index); None touches any.

    Returns
    -------
    int
        How many decisions were applied.

    Raises
    ------
    TypeError
        If given anything that is not an identity decision: silently
        ignoring one would undo a person's decision.
    """
    for decision in decisions:
        if not isinstance(decision, IdentityDecision):
            raise TypeError(
                f"not an identity decision this version can apply: {decision!r}"
            )
    distinct = DistinctPairs(prior)
    for decision in decisions:
        distinct.advance(decision)
        _APPLY[decision.kind](_Step(conn, decision, distinct, scope))
    return len(decisions)


def _rekey(step: _Step) -> None:
    """Same person or correction: the records become one, as decided."""
    decision = step.decision
    result = decision.result
    if result is None:
        return
    rows: dict[int, sqlite3.Row] = {}
    for record in decision.records:
        for row in _fitting_rows(step, record, result):
            rows[int(row["id"])] = row
    for row in _fitting_rows(step, result, result):
        if same_demographics(row_demographics(row), result):
            rows[int(row["id"])] = row
    if not rows:
        return

    survivor = min(rows)
    first = min(rows.values(), key=lambda row: (row["first_seen_at"], row["id"]))
    chosen = Demographics(
        patient_id=result.patient_id,
        issuer=result.issuer,
        name=result.name,
        birth_date=_chosen(rows.values(), decision, "birth_date"),
        sex=_chosen(rows.values(), decision, "sex"),
    )
    merge_rows(step.conn, survivor, sorted(set(rows) - {survivor}))
    _set_demographics(step.conn, survivor, chosen, first)
    refresh_conflicts(step.conn, survivor, step.distinct, decision)


def _close_conflict(step: _Step) -> None:
    """Different people: close the conflicts between the two records."""
    first, second = step.decision.records[:2]
    left = [int(row["id"]) for row in _fitting_rows(step, first, first)]
    right = [int(row["id"]) for row in _fitting_rows(step, second, second)]
    for a in left:
        for b in right:
            low, high = sorted((a, b))
            step.conn.execute(
                "DELETE FROM identity_conflicts WHERE patient_a = ? AND patient_b = ?",
                (low, high),
            )


def _move_study(step: _Step) -> None:
    """Move a study, with all its instances, to the record decided on."""
    conn, decision = step.conn, step.decision
    if decision.result is None:
        return
    study = conn.execute(
        "SELECT s.id, s.patient_ref, p.patient_id FROM studies s"
        " JOIN patients p ON p.id = s.patient_ref WHERE s.study_uid = ?",
        (decision.study_uid,),
    ).fetchone()
    if study is None or not step.in_scope(study["patient_id"]):
        return

    owners = {int(study["patient_ref"])} | {
        int(row[0])
        for row in conn.execute(
            "SELECT DISTINCT i.patient_ref FROM instances i"
            " JOIN series se ON se.id = i.series_ref WHERE se.study_ref = ?",
            (study["id"],),
        )
    }
    target = _target_row(step, int(study["id"]), decision.result)
    conn.execute(
        "UPDATE studies SET patient_ref = ? WHERE id = ?", (target, study["id"])
    )
    conn.execute(
        "UPDATE instances SET patient_ref = ? WHERE series_ref IN"
        " (SELECT id FROM series WHERE study_ref = ?)",
        (target, study["id"]),
    )
    # A record the study leaves behind keeps only conflicts still founded.
    for owner in sorted(owners - {target}):
        if not drop_if_empty(conn, owner):
            refresh_conflicts(conn, owner, step.distinct, decision)
    refresh_conflicts(conn, target, step.distinct, decision)


_APPLY: dict[DecisionKind, Callable[[_Step], None]] = {
    DecisionKind.SAME_PERSON: _rekey,
    DecisionKind.CORRECT: _rekey,
    DecisionKind.DIFFERENT_PEOPLE: _close_conflict,
    DecisionKind.MOVE_STUDY: _move_study,
    DecisionKind.NEW_PATIENT: _move_study,
}


def row_demographics(row: sqlite3.Row) -> Demographics:
    """The demographics a patient row shows."""
    return Demographics(
        patient_id=row["patient_id"],
        issuer=row["issuer"],
        name=row["name"],
        birth_date=row["birth_date"],
        sex=row["sex"],
    )


def merge_rows(conn: sqlite3.Connection, survivor: int, others: Sequence[int]) -> None:
    """Fold patient rows into `survivor`: studies, instances and conflicts."""
    for other in others:
        conn.execute(
            "UPDATE studies SET patient_ref = ? WHERE patient_ref = ?",
            (survivor, other),
        )
        conn.execute(
            "UPDATE instances SET patient_ref = ? WHERE patient_ref = ?",
            (survivor, other),
        )
        _repoint_conflicts(conn, other, survivor)
        conn.execute("DELETE FROM patients WHERE id = ?", (other,))


def drop_if_empty(conn: sqlite3.Connection, patient: int) -> bool:
    """Delete a patient row no study or instance refers to; say if it went."""
    used = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM studies WHERE patient_ref = :p)"
        " OR EXISTS (SELECT 1 FROM instances WHERE patient_ref = :p)",
        {"p": patient},
    ).fetchone()[0]
    if used:
        return False
    conn.execute(
        "DELETE FROM identity_conflicts WHERE patient_a = ? OR patient_b = ?",
        (patient, patient),
    )
    conn.execute("DELETE FROM patients WHERE id = ?", (patient,))
    return True


def refresh_conflicts(
    conn: sqlite3.Connection,
    patient: int,
    distinct: DistinctPairs,
    decision: IdentityDecision,
) -> None:
    """Work out a row's conflicts again after its demographics changed.

    Records sharing its ID that differ are a conflict (unless decided to be
    different people); a conflict with a record of another ID stays only
    while a study links the two.
    """
    row = conn.execute("SELECT * FROM patients WHERE id = ?", (patient,)).fetchone()
    if row is None:
        return
    mine = row_demographics(row)
    others = {
        int(other["id"]): other
        for other in conn.execute(
            "SELECT * FROM patients WHERE id != ? AND (patient_id = ? OR id IN"
            " (SELECT patient_a FROM identity_conflicts WHERE patient_b = ?"
            "  UNION SELECT patient_b FROM identity_conflicts WHERE patient_a = ?))",
            (patient, mine.patient_id, patient, patient),
        )
    }
    for other_id, other in others.items():
        theirs = row_demographics(other)
        low, high = sorted((patient, other_id))
        fields = _conflict_fields(theirs, mine)
        linked = theirs.patient_id == mine.patient_id or _share_study(
            conn, patient, other_id
        )
        if not fields or not linked or distinct(mine, theirs):
            conn.execute(
                "DELETE FROM identity_conflicts WHERE patient_a = ? AND patient_b = ?",
                (low, high),
            )
            continue
        conn.execute(
            "INSERT INTO identity_conflicts"
            " (patient_a, patient_b, fields, detected_at, source_ae)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (patient_a, patient_b)"
            " DO UPDATE SET fields = excluded.fields",
            (low, high, ",".join(fields), decision.made_at, DECISION_SOURCE),
        )


def _fitting_rows(
    step: _Step, record: Demographics, result: Demographics
) -> list[sqlite3.Row]:
    if not step.in_scope(record.patient_id):
        return []
    rows = step.conn.execute(
        "SELECT * FROM patients WHERE patient_id = ? AND issuer = ?"
        " AND name_key = ? ORDER BY id",
        (record.patient_id, record.issuer, record.name_key),
    ).fetchall()
    return [row for row in rows if fits(row_demographics(row), record, result)]


def _target_row(step: _Step, study: int, target: Demographics) -> int:
    """The row showing `target`: exactly, else fitting; made if there is none."""
    candidates = _fitting_rows(step, target, target)
    for row in candidates:
        if same_demographics(row_demographics(row), target):
            return int(row["id"])
    if candidates and step.decision.kind is DecisionKind.MOVE_STUDY:
        return int(candidates[0]["id"])

    # A new record is first seen when the study's first instance arrived.
    first = step.conn.execute(
        "SELECT i.received_at, i.source_ae FROM instances i"
        " JOIN series se ON se.id = i.series_ref WHERE se.study_ref = ?"
        " ORDER BY i.received_at, i.id LIMIT 1",
        (study,),
    ).fetchone()
    cursor = step.conn.execute(
        "INSERT INTO patients (patient_id, issuer, name, name_key, birth_date,"
        " sex, first_seen_at, first_source_ae) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            target.patient_id,
            target.issuer,
            target.name,
            target.name_key,
            target.birth_date,
            target.sex,
            first["received_at"] if first else step.decision.made_at,
            first["source_ae"] if first else DECISION_SOURCE,
        ),
    )
    return int(cursor.lastrowid or 0)


def _chosen(
    rows: Collection[sqlite3.Row], decision: IdentityDecision, field: str
) -> str:
    """A birth date or sex as decided; one left empty on all sides is kept."""
    assert decision.result is not None
    value = str(getattr(decision.result, field))
    if value or any(getattr(record, field) for record in decision.records):
        return value
    known = [row[field] for row in sorted(rows, key=lambda row: row["id"])]
    return next((item for item in known if item), "")


def _set_demographics(
    conn: sqlite3.Connection, patient: int, chosen: Demographics, first: sqlite3.Row
) -> None:
    conn.execute(
        "UPDATE patients SET patient_id = ?, issuer = ?, name = ?, name_key = ?,"
        " birth_date = ?, sex = ?, first_seen_at = ?, first_source_ae = ?"
        " WHERE id = ?",
        (
            chosen.patient_id,
            chosen.issuer,
            chosen.name,
            chosen.name_key,
            chosen.birth_date,
            chosen.sex,
            first["first_seen_at"],
            first["first_source_ae"],
            patient,
        ),
    )


def _repoint_conflicts(conn: sqlite3.Connection, old: int, new: int) -> None:
    rows = conn.execute(
        "SELECT * FROM identity_conflicts WHERE patient_a = ? OR patient_b = ?",
        (old, old),
    ).fetchall()
    conn.execute(
        "DELETE FROM identity_conflicts WHERE patient_a = ? OR patient_b = ?",
        (old, old),
    )
    for row in rows:
        other = row["patient_b"] if row["patient_a"] == old else row["patient_a"]
        if other == new:
            continue
        low, high = sorted((new, int(other)))
        # Of two conflicts that become one, the earlier one is kept.
        conn.execute(
            "INSERT INTO identity_conflicts"
            " (patient_a, patient_b, fields, detected_at, source_ae)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (patient_a, patient_b) DO UPDATE"
            " SET fields = excluded.fields, detected_at = excluded.detected_at,"
            " source_ae = excluded.source_ae"
            " WHERE excluded.detected_at < identity_conflicts.detected_at",
            (low, high, row["fields"], row["detected_at"], row["source_ae"]),
        )


def _share_study(conn: sqlite3.Connection, a: int, b: int) -> bool:
    """Tell whether one record's study holds an instance of the other."""
    found = conn.execute(
        "SELECT 1 FROM instances i JOIN series se ON se.id = i.series_ref"
        " JOIN studies s ON s.id = se.study_ref"
        " WHERE (i.patient_ref = :a AND s.patient_ref = :b)"
        " OR (i.patient_ref = :b AND s.patient_ref = :a) LIMIT 1",
        {"a": a, "b": b},
    ).fetchone()
    return found is not None


def _conflict_fields(known: Demographics, other: Demographics) -> list[str]:
    fields = disagreements(known, other)
    if known.patient_id != other.patient_id:
        fields.insert(0, "patient_id")
    return fields or differences(known, other)
