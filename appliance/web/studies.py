"""The study list and the study page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, abort, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from appliance.index.browse import (
    InstanceEntry,
    PageKey,
    StudyQuery,
    find_studies,
    get_study,
    study_series,
)
from appliance.index.review import PatientRecord, in_conflict, records_with_id_prefix
from appliance.web.access import Permission, audit, may, requires
from appliance.web.formatting import to_dicom_date
from appliance.web.render.info import SR_CLASS_PREFIX
from appliance.web.runtime import index_db

bp = Blueprint("studies", __name__)

PAGE_SIZE = 50
_FIELDS = ("name", "patient_id", "accession", "modality", "description")


@bp.get("/")
@requires(Permission.LIST_STUDIES)
def index() -> Any:
    """List studies, newest first, filtered by the search form."""
    query = _query(request.args)
    after = _page_key(request.args.get("after", ""))
    page = find_studies(index_db(), query, after, PAGE_SIZE)
    records = _records_with_id(query.patient_id.strip())

    audit("list-studies", detail=_describe(query, after))
    next_url = None
    if page.next_key is not None:
        args = _without(request.args, "after")
        args["after"] = page.next_key.encode()
        next_url = url_for("studies.index", **args)
    return render_template(
        "studies.html",
        page=page,
        args=request.args,
        today=datetime.now().strftime("%Y%m%d"),
        next_url=next_url,
        first_url=url_for("studies.index", **_without(request.args, "after")),
        is_later_page=after is not None,
        can_open=may(Permission.VIEW_IMAGES),
        can_review=may(Permission.REVIEW_IDENTITY),
        id_records=records,
        record_labels=_labels(records),
        records_in_conflict=in_conflict(index_db(), {r.ref for r in records}),
    )


def _records_with_id(patient_id: str) -> list[PatientRecord]:
    """Every patient record whose ID starts with what was searched."""
    return records_with_id_prefix(index_db(), patient_id) if patient_id else []


def _labels(records: list[PatientRecord]) -> dict[int, str]:
    """Letters that tell apart records sharing one ID: A, B, C, ..."""
    by_id: dict[str, list[int]] = {}
    for record in records:
        by_id.setdefault(record.demographics.patient_id, []).append(record.ref)
    return {
        ref: chr(ord("A") + number % 26)
        for refs in by_id.values()
        if len(refs) > 1
        for number, ref in enumerate(refs)
    }


@bp.get("/studies/<study_uid>")
@requires(Permission.VIEW_IMAGES)
def study(study_uid: str) -> Any:
    """Show a study: its thumbnails and the viewer."""
    conn = index_db()
    summary = get_study(conn, study_uid)
    if summary is None:
        abort(404)
    series = study_series(conn, summary.id)

    audit("view-study", patient_id=summary.patient_id, study_uid=study_uid)
    groups: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    for group in series:
        group_items = [
            _viewer_item(entry, len(items) + offset)
            for offset, entry in enumerate(group.instances, start=1)
        ]
        items.extend(group_items)
        groups.append({"series": group, "items": group_items})
    return render_template(
        "study.html",
        study=summary,
        groups=groups,
        items=items,
        can_download=may(Permission.DOWNLOAD),
    )


def _viewer_item(entry: InstanceEntry, number: int) -> dict[str, Any]:
    """What the viewer's script needs of one instance (no patient data)."""
    kind = _kind(entry)
    has_pixels = kind in ("image", "clip")
    return {
        "id": entry.id,
        "number": number,
        "kind": kind,
        "frames": entry.number_of_frames,
        "label": _label(entry),
        "info": url_for("viewer.info", instance_id=entry.id),
        "frame": url_for("viewer.frame", instance_id=entry.id, number=1)[:-1],
        "thumbnail": (
            url_for("viewer.thumbnail", instance_id=entry.id) if has_pixels else None
        ),
        "report": url_for("viewer.report", instance_id=entry.id),
        "jpeg": url_for("downloads.image", instance_id=entry.id, kind="jpeg"),
        "png": url_for("downloads.image", instance_id=entry.id, kind="png"),
    }


def _kind(entry: InstanceEntry) -> str:
    if entry.sop_class_uid.startswith(SR_CLASS_PREFIX):
        return "report"
    if entry.rows and entry.columns:
        return "clip" if entry.number_of_frames > 1 else "image"
    return "other"


def _label(entry: InstanceEntry) -> str:
    parts = [entry.modality or "?"]
    if entry.series_number is not None:
        parts.append(f"S{entry.series_number}")
    if entry.instance_number is not None:
        parts.append(f"#{entry.instance_number}")
    if entry.number_of_frames > 1:
        parts.append(f"{entry.number_of_frames} frames")
    return " ".join(parts)


def _query(args: MultiDict[str, str]) -> StudyQuery:
    # No DICOM value holds a NUL, and SQLite's LIKE would end the pattern
    # there (so "<NUL>" would match every study): refuse the search.
    if any("\x00" in value for value in args.values()):
        abort(400)
    values = {name: args.get(name, "").strip()[:64] for name in _FIELDS}
    return StudyQuery(
        date_from=to_dicom_date(args.get("date_from")),
        date_to=to_dicom_date(args.get("date_to")),
        **values,
    )


def _page_key(token: str) -> PageKey | None:
    if not token:
        return None
    try:
        return PageKey.decode(token)
    except ValueError:
        abort(400)


def _describe(query: StudyQuery, after: PageKey | None) -> str:
    used = [f"{name}={value}" for name, value in vars(query).items() if value]
    if after is not None:
        used.append("next-page")
    return " ".join(used)


def _without(args: MultiDict[str, str], name: str) -> dict[str, Any]:
    return {key: value for key, value in args.items() if key != name}
