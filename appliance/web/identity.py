"""Patients to review, a patient's records and history, and the decisions.

Who may decide: admins and clinicians (:data:`Permission.REVIEW_IDENTITY`).
A decision is recorded in ``app.db`` with its audit event in one
transaction, then applied to the live index through the index writer
(see :mod:`appliance.web.identity_decide`); the web never writes
``index.db``. Without a writer (a web app started on its own) the
pages show, and decisions are refused.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

from appliance.index.identity import Demographics
from appliance.index.identity_rules import WORKLIST_SOURCE, DecisionKind
from appliance.index.review import (
    PatientRecord,
    StudyBrief,
    conflicts_of,
    find_record,
    get_conflict,
    get_patient,
    open_conflicts,
    records_with_id,
)
from appliance.state.identity import (
    checked_demographics,
    get_decision,
    history,
    record_decision,
)
from appliance.web.access import Permission, audit, requires
from appliance.web.formatting import dicom_date
from appliance.web.identity_decide import can_decide, decide
from appliance.web.identity_decide import undo as undo_decision
from appliance.web.identity_forms import (
    MERGED_FIELDS,
    CorrectForm,
    DifferentForm,
    MergeForm,
    MoveForm,
    UndoForm,
    choice,
)
from appliance.web.runtime import index_db, release_index_db, state_db

logger = logging.getLogger(__name__)

bp = Blueprint("identity", __name__, url_prefix="/patients")

REVIEW_LIMIT = 100
STUDIES_SHOWN = 200
NEW_PATIENT = "new"


@bp.get("/review")
@requires(Permission.REVIEW_IDENTITY)
def review() -> Any:
    """List every open conflict, both records side by side."""
    conflicts = open_conflicts(index_db(), REVIEW_LIMIT)
    audit("view-identity-review", detail=f"{len(conflicts)} conflict(s) shown")
    return render_template(
        "identity_review.html",
        conflicts=conflicts,
        form=DifferentForm(),
        can_decide=can_decide(),
    )


@bp.get("/<int:ref>")
@requires(Permission.REVIEW_IDENTITY)
def patient(ref: int) -> Any:
    """Show one record: its studies, its namesakes, its history and actions."""
    conn = index_db()
    record = _record_or_404(ref, STUDIES_SHOWN)
    namesakes = [
        other
        for other in records_with_id(conn, record.demographics.patient_id)
        if other.ref != ref
    ]
    conflicts = conflicts_of(conn, ref)
    entries = history(
        state_db(),
        {record.demographics.patient_id},
        {study.study_uid for study in record.studies},
    )
    targets = _move_targets(record, namesakes, [other for _, other, _ in conflicts])

    audit("view-patient-record", patient_id=record.demographics.patient_id)
    correct = CorrectForm(token=record.token)
    correct.fill(record.demographics)
    move = MoveForm(token=record.token)
    move.study_uid.choices = [
        choice(s.study_uid, _study_label(s)) for s in record.studies
    ]
    move.target.choices = targets
    move.fill(record.demographics)
    return render_template(
        "identity_patient.html",
        record=record,
        namesakes=namesakes,
        conflicts=conflicts,
        entries=entries,
        correct=correct,
        move=move,
        undo=UndoForm(),
        can_decide=can_decide(),
    )


@bp.post("/conflicts/<int:conflict_id>/different")
@requires(Permission.REVIEW_IDENTITY)
def different(conflict_id: int) -> Any:
    """Decide that the two records of a conflict are different people."""
    form = DifferentForm()
    conflict = get_conflict(index_db(), conflict_id)
    if conflict is None:
        abort(404)
    if not form.validate_on_submit() or not _unchanged(
        form, conflict.first, conflict.second
    ):
        return _stale(url_for("identity.review"))
    first, second = conflict.first.demographics, conflict.second.demographics
    entry = decide(
        lambda made_by: record_decision(
            state_db(),
            DecisionKind.DIFFERENT_PEOPLE,
            (first, second),
            made_by,
            note=form.note.data or "",
        ),
        "identity-different-people",
        first.patient_id,
    )
    if entry is not None:
        flash("Recorded: these are different people.", "info")
    return redirect(url_for("identity.review"))


@bp.route("/merge", methods=["GET", "POST"])
@requires(Permission.REVIEW_IDENTITY)
def merge() -> Any:
    """Choose the right value of each field, then join two records as one.

    The records are ``?first=`` and ``?second=`` (record numbers).
    """
    first_ref = _ref_arg("first")
    second_ref = _ref_arg("second")
    if first_ref == second_ref:
        flash("Give the number of another record.", "error")
        return redirect(url_for("identity.patient", ref=first_ref))
    first = _record_or_404(first_ref, STUDIES_SHOWN)
    second = _record_or_404(second_ref, STUDIES_SHOWN)
    form = MergeForm(first_token=first.token, second_token=second.token)
    if not form.is_submitted():
        # The worklist entry is what the front desk checked: offer its details.
        if second.first_source_ae == WORKLIST_SOURCE:
            for field in MERGED_FIELDS:
                form[field].data = "second"
        audit("view-identity-merge", patient_id=first.demographics.patient_id)
        return render_template(
            "identity_merge.html", first=first, second=second, form=form
        )
    if not form.validate() or not _unchanged(form, first, second):
        return _stale(url_for("identity.patient", ref=first_ref))

    chosen = _chosen(form, first.demographics, second.demographics)
    entry = decide(
        lambda made_by: record_decision(
            state_db(),
            DecisionKind.SAME_PERSON,
            (first.demographics, second.demographics),
            made_by,
            result=chosen,
            note=form.note.data or "",
        ),
        "identity-same-person",
        chosen.patient_id,
    )
    if entry is not None:
        flash("Recorded: the two records are one person.", "info")
    return _to_record(chosen, first_ref)


@bp.post("/<int:ref>/correct")
@requires(Permission.REVIEW_IDENTITY)
def correct(ref: int) -> Any:
    """Correct a record's demographics (in the index; files stay as sent)."""
    record = _record_or_404(ref)
    form = CorrectForm()
    if not form.validate_on_submit() or form.token.data != record.token:
        return _stale(url_for("identity.patient", ref=ref))
    try:
        corrected = checked_demographics(form.demographics())
    except ValueError as exc:
        flash(f"Not corrected: {exc}", "error")
        return redirect(url_for("identity.patient", ref=ref))
    entry = decide(
        lambda made_by: record_decision(
            state_db(),
            DecisionKind.CORRECT,
            (record.demographics,),
            made_by,
            result=corrected,
            note=form.note.data or "",
        ),
        "identity-correct",
        corrected.patient_id,
    )
    if entry is not None:
        flash("Recorded: the record's details are corrected.", "info")
    return _to_record(corrected, ref)


@bp.post("/<int:ref>/move")
@requires(Permission.REVIEW_IDENTITY)
def move(ref: int) -> Any:
    """Move one study of a record to another record or to a new patient."""
    record = _record_or_404(ref, STUDIES_SHOWN)
    namesakes = records_with_id(index_db(), record.demographics.patient_id)
    conflicts = [other for _, other, _ in conflicts_of(index_db(), ref)]
    form = MoveForm()
    form.study_uid.choices = [choice(s.study_uid, s.study_uid) for s in record.studies]
    form.target.choices = _move_targets(record, namesakes, conflicts)
    if not form.validate_on_submit() or form.token.data != record.token:
        return _stale(url_for("identity.patient", ref=ref))
    try:
        kind, target = _move_target(form)
    except ValueError as exc:
        flash(f"Not moved: {exc}", "error")
        return redirect(url_for("identity.patient", ref=ref))
    study_uid = form.study_uid.data or ""
    entry = decide(
        lambda made_by: record_decision(
            state_db(),
            kind,
            (record.demographics,),
            made_by,
            result=target,
            study_uid=study_uid,
            note=form.note.data or "",
        ),
        f"identity-{kind.value}",
        target.patient_id,
        study_uid,
    )
    if entry is not None:
        flash("Recorded: the study is moved.", "info")
    return _to_record(target, ref)


@bp.post("/decisions/<int:decision_id>/undo")
@requires(Permission.REVIEW_IDENTITY)
def undo(decision_id: int) -> Any:
    """Undo one decision; the undo is recorded beside it."""
    form = UndoForm()
    if get_decision(state_db(), decision_id) is None:
        abort(404)
    if not form.validate_on_submit():
        return _stale(url_for("identity.review"))
    if undo_decision(decision_id, form.note.data or ""):
        flash(f"Decision {decision_id} is undone.", "info")
    return redirect(url_for("identity.review"))


def _ref_arg(name: str) -> int:
    value = request.args.get(name, "").strip().lstrip("#")
    if not value.isdigit():
        abort(404)
    return int(value)


def _record_or_404(ref: int, studies: int = 0) -> PatientRecord:
    record = get_patient(index_db(), ref, studies)
    if record is None:
        abort(404)
    return record


def _unchanged(
    form: DifferentForm | MergeForm, first: PatientRecord, second: PatientRecord
) -> bool:
    return form.first_token.data == first.token and (
        form.second_token.data == second.token
    )


def _stale(target: str) -> Response:
    flash(
        "These records changed since the page was opened (another decision, "
        "or a rebuild). Please look again.",
        "error",
    )
    return redirect(target)


def _chosen(form: MergeForm, first: Demographics, second: Demographics) -> Demographics:
    values = {
        field: getattr(first if form[field].data == "first" else second, field)
        for field in MERGED_FIELDS
    }
    return Demographics(**values)


def _move_targets(
    record: PatientRecord, namesakes: list[PatientRecord], others: list[int]
) -> list[Any]:
    conn = index_db()
    candidates = {r.ref: r for r in namesakes if r.ref != record.ref}
    for ref in others:
        found = get_patient(conn, ref, 0)
        if found is not None and ref != record.ref:
            candidates[ref] = found
    choices = [
        choice(f"{ref}:{found.token}", f"Record {ref}: {_describe(found.demographics)}")
        for ref, found in sorted(candidates.items())
    ]
    return [*choices, choice(NEW_PATIENT, "A new patient (details below)")]


def _move_target(form: MoveForm) -> tuple[DecisionKind, Demographics]:
    """Read the target of a move form: a record, or a new patient's details.

    Raises
    ------
    ValueError
        If the target record changed, or the new details are not valid.
    """
    choice = form.target.data or ""
    if choice == NEW_PATIENT:
        return DecisionKind.NEW_PATIENT, checked_demographics(form.demographics())
    ref, _, token = choice.partition(":")
    found = get_patient(index_db(), int(ref), 0) if ref.isdigit() else None
    if found is None or found.token != token:
        raise ValueError("the record to move to changed; please look again")
    return DecisionKind.MOVE_STUDY, found.demographics


def _to_record(demographics: Demographics, fallback: int) -> Response:
    release_index_db()
    ref = find_record(index_db(), demographics)
    return redirect(url_for("identity.patient", ref=ref or fallback))


def _describe(demographics: Demographics) -> str:
    parts = [demographics.name or "(no name)", demographics.patient_id]
    if demographics.issuer:
        parts.append(f"issuer {demographics.issuer}")
    parts += [demographics.birth_date or "no birth date", demographics.sex or "?"]
    return ", ".join(parts)


def _study_label(study: StudyBrief) -> str:
    date = dicom_date(study.study_date) or "no date"
    accession = (
        f", accession {study.accession_number}" if study.accession_number else ""
    )
    return f"{date}: {study.description or 'study'}{accession} ({study.study_uid})"
