"""Downloads: one image as JPEG or PNG, a whole study as a streamed ZIP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, request

from appliance.index.browse import InstanceEntry, get_study, study_instances
from appliance.web.access import Permission, audit, requires
from appliance.web.runtime import index_db, release_index_db, runtime
from appliance.web.viewer import instance_or_404
from appliance.web.zipstream import stream_zip

bp = Blueprint("downloads", __name__)

EXTENSIONS = {"jpeg": "jpg", "png": "png"}


@bp.get("/instances/<int:instance_id>/download/<kind>")
@requires(Permission.DOWNLOAD)
def image(instance_id: int, kind: str) -> Any:
    """Download one frame (``?frame=N``, default 1) as ``jpeg`` or ``png``."""
    if kind not in EXTENSIONS:
        abort(404)
    entry = instance_or_404(instance_id)
    number = request.args.get("frame", 1, type=int) or 1
    if not entry.rows or not 1 <= number <= entry.number_of_frames:
        abort(404)

    rendered = runtime().renderer.download(entry, number, kind)
    audit(
        "download-image",
        patient_id=entry.patient_id,
        study_uid=entry.study_uid,
        object_uid=entry.sop_uid,
        detail=f"{kind} frame {number}",
    )
    name = f"{_stem(entry)}-frame{number}.{EXTENSIONS[kind]}"
    response = Response(rendered.data, mimetype=rendered.mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.get("/studies/<study_uid>/download")
@requires(Permission.DOWNLOAD)
def study(study_uid: str) -> Any:
    """Download every stored file of a study as a ZIP, streamed as it is made."""
    conn = index_db()
    summary = get_study(conn, study_uid)
    if summary is None:
        abort(404)
    entries = study_instances(conn, summary.id)
    release_index_db()

    audit(
        "download-study",
        patient_id=summary.patient_id,
        study_uid=study_uid,
        detail=f"{len(entries)} files",
    )
    storage = runtime().options.storage
    members = [
        (_member_name(entry), storage.absolute(entry.file_path)) for entry in entries
    ]
    name = f"study-{summary.study_date or 'undated'}-{summary.id}.zip"
    response = Response(_chunks(members), mimetype="application/zip")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _chunks(members: list[tuple[str, Path]]) -> Iterator[bytes]:
    for chunk in stream_zip(members):
        if chunk:
            yield chunk


def _member_name(entry: InstanceEntry) -> str:
    # Series folder, then instance number and UID: no patient data in names,
    # and the content hash keeps two differing copies of one UID apart.
    series = (
        f"series-{entry.series_number if entry.series_number is not None else 0:03d}"
    )
    number = entry.instance_number if entry.instance_number is not None else 0
    suffix = f"-{entry.sha256[:8]}" if entry.has_differing_copy else ""
    return f"{series}-{entry.modality or 'OT'}/{number:04d}-{entry.sop_uid}{suffix}.dcm"


def _stem(entry: InstanceEntry) -> str:
    series = entry.series_number if entry.series_number is not None else 0
    number = entry.instance_number if entry.instance_number is not None else 0
    return f"series{series}-image{number}"
