"""The front desk's worklist: schedule today's patients for the modality.

What is scheduled here is what the modality finds when it queries the
Modality Worklist (PS3.4 K.6, served by :mod:`appliance.dicom.worklist`),
from its next query on. Front desk, clinicians and admins may schedule
(:data:`Permission.SCHEDULE`). Every change is audited under the patient's
ID; the log names entries by their row id only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from appliance.state.mpps import PerformedStep, steps_for_entry
from appliance.state.worklist import (
    WorklistEntry,
    add_entry,
    get_entry,
    list_entries,
    remove_entry,
)
from appliance.web.access import Permission, audit, requires
from appliance.web.admin_forms import ActionForm
from appliance.web.formatting import dicom_date, dicom_time, person_name
from appliance.web.runtime import state_db
from appliance.web.worklist_forms import EntryForm

logger = logging.getLogger(__name__)

bp = Blueprint("worklist", __name__, url_prefix="/worklist")

# The list's date filter: its value in the URL and its label.
WHEN = {"today": "Today", "upcoming": "Today and later", "all": "All dates"}
# PS3.3 C.4.14: Performed Procedure Step Start and End Date and Time.
START_TAGS = ("00400244", "00400245")
END_TAGS = ("00400250", "00400251")


@dataclass(frozen=True)
class StepRow:
    """One performed procedure step as the entry page shows it."""

    status: str
    calling_ae: str
    started: str
    ended: str
    sop_instance_uid: str


@bp.get("/")
@requires(Permission.SCHEDULE)
def index() -> Any:
    """List scheduled procedures: today's, from today on, or all dates."""
    when = request.args.get("when", "today")
    if when not in WHEN:
        when = "today"
    include_done = request.args.get("done") == "1"

    entries = _entries(when, include_done, date.today())
    done = "with done" if include_done else "without done"
    audit("list-worklist", detail=f"{WHEN[when]}, {done}: {len(entries)} shown")
    return render_template(
        "worklist.html",
        entries=entries,
        when=when,
        when_choices=WHEN,
        include_done=include_done,
    )


@bp.route("/new", methods=["GET", "POST"])
@requires(Permission.SCHEDULE)
def add() -> Any:
    """Schedule a procedure; a refused value shows the form again, as typed."""
    form = EntryForm()
    if request.method == "GET":
        return render_template("worklist_entry_form.html", form=form)
    if not form.validate_on_submit():
        flash("Please correct the marked fields.", "error")
        return render_template("worklist_entry_form.html", form=form), 400

    try:
        added = add_entry(state_db(), form.new_entry(), created_by=current_user.name)
    except ValueError as exc:
        flash(form.show_error(exc), "error")
        return render_template("worklist_entry_form.html", form=form), 400

    audit(
        "worklist-add",
        patient_id=added.patient_id,
        study_uid=added.study_uid,
        detail=describe(added),
    )
    logger.info("Worklist entry %d scheduled by %s", added.id, current_user.name)
    flash(
        f"Scheduled {person_name(added.patient_name)} on"
        f" {dicom_date(added.scheduled_date)} at {dicom_time(added.scheduled_time)}.",
        "info",
    )
    return redirect(_list_showing(added))


@bp.get("/<int:entry_id>")
@requires(Permission.SCHEDULE)
def entry(entry_id: int) -> Any:
    """Show one entry and what the modality reported doing for it (MPPS)."""
    return _entry_page(entry_id, confirming=False)


@bp.get("/<int:entry_id>/remove")
@requires(Permission.SCHEDULE)
def confirm_remove(entry_id: int) -> Any:
    """Ask before removing an entry: the page shows what would go."""
    return _entry_page(entry_id, confirming=True)


@bp.post("/<int:entry_id>/remove")
@requires(Permission.SCHEDULE)
def remove(entry_id: int) -> Any:
    """Remove an entry made by mistake; the modality no longer sees it."""
    found = get_entry(state_db(), entry_id)
    if found is None or not remove_entry(state_db(), entry_id):
        abort(404)

    audit(
        "worklist-remove",
        patient_id=found.patient_id,
        study_uid=found.study_uid,
        detail=f"{describe(found)}, was {found.status.value}",
    )
    logger.info("Worklist entry %d removed by %s", entry_id, current_user.name)
    flash(f"Removed {person_name(found.patient_name)} from the worklist.", "info")
    return redirect(url_for("worklist.index"))


def describe(entry: WorklistEntry) -> str:
    """One line for the audit trail: which entry, without the patient's name."""
    return (
        f"entry {entry.id} accession {entry.accession_number}"
        f" on {entry.scheduled_date} {entry.scheduled_time}"
    )


def _entries(when: str, include_done: bool, today: date) -> list[WorklistEntry]:
    # Entries from `today` on, or of every date.
    stale_days = None if when == "all" else 0
    entries = list_entries(
        state_db(), stale_days=stale_days, include_done=include_done, today=today
    )

    if when == "today":
        day = today.strftime("%Y%m%d")
        return [entry for entry in entries if entry.scheduled_date == day]
    return entries


def _entry_page(entry_id: int, *, confirming: bool) -> Any:
    found = get_entry(state_db(), entry_id)
    if found is None:
        abort(404)

    steps = [_step_row(step) for step in steps_for_entry(state_db(), entry_id)]
    audit("view-worklist-entry", patient_id=found.patient_id, study_uid=found.study_uid)
    return render_template(
        "worklist_entry.html",
        entry=found,
        steps=steps,
        confirming=confirming,
        action_form=ActionForm(),
    )


def _list_showing(entry: WorklistEntry) -> str:
    # The list's filter under which a new entry appears.
    today = date.today().strftime("%Y%m%d")
    if entry.scheduled_date == today:
        return url_for("worklist.index", when="today")
    if entry.scheduled_date > today:
        return url_for("worklist.index", when="upcoming")
    return url_for("worklist.index", when="all")


def _step_row(step: PerformedStep) -> StepRow:
    # The step's data set is in the DICOM JSON model (PS3.18 F.2).
    try:
        attributes = json.loads(step.attributes)
    except ValueError:
        attributes = {}
    return StepRow(
        status=step.status.value,
        calling_ae=step.calling_ae,
        started=_when(attributes, START_TAGS) or _utc(step.created_at),
        ended=_when(attributes, END_TAGS),
        sop_instance_uid=step.sop_instance_uid,
    )


def _utc(stamp: str) -> str:
    # An ISO 8601 time in UTC, as app.db keeps it, to the minute.
    return f"{stamp[:16].replace('T', ' ')} UTC"


def _when(attributes: Any, tags: tuple[str, str]) -> str:
    values = []
    for tag in tags:
        element = attributes.get(tag) if isinstance(attributes, dict) else None
        value = (element or {}).get("Value") or [""]
        values.append(str(value[0]))
    day, moment = values
    return f"{dicom_date(day)} {dicom_time(moment)}".strip()
