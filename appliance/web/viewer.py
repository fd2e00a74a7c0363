"""What the viewer's script fetches: instance details, frames, thumbnails.

Frames are fetched one request each, so the first frame of a clip shows at
once while the rest arrive. Responses carry an ETag made of the content
hash; the browser revalidates (``no-cache``), so a logged-out browser never
shows an image from its cache without asking.
"""

from __future__ import annotations

import logging
from typing import Any

import pydicom
from flask import Blueprint, Response, abort, jsonify, request

from appliance.index.browse import InstanceEntry, get_instance
from appliance.web.access import Permission, audit, requires
from appliance.web.render.info import read_info
from appliance.web.report import report_lines
from appliance.web.runtime import index_db, runtime

logger = logging.getLogger(__name__)

bp = Blueprint("viewer", __name__)


@bp.get("/instances/<int:instance_id>/info")
@requires(Permission.VIEW_IMAGES)
def info(instance_id: int) -> Any:
    """Describe an instance for the viewer; records that it was viewed."""
    entry = instance_or_404(instance_id)
    path = runtime().options.storage.absolute(entry.file_path)
    details = read_info(path, entry.sop_class_uid, entry.number_of_frames)

    audit(
        "view-instance",
        patient_id=entry.patient_id,
        study_uid=entry.study_uid,
        object_uid=entry.sop_uid,
    )
    window = details.window
    return jsonify(
        kind=details.kind,
        frames=details.frames,
        rows=details.rows,
        columns=details.columns,
        grayscale=details.grayscale,
        frameRate=details.frame_rate,
        window=({"center": window.center, "width": window.width} if window else None),
        passthrough=runtime().renderer.passthrough(entry),
    )


@bp.get("/instances/<int:instance_id>/frames/<int:number>")
@requires(Permission.VIEW_IMAGES)
def frame(instance_id: int, number: int) -> Any:
    """Return one frame (1-based): a stored JPEG as is, else a cached PNG."""
    entry = instance_or_404(instance_id)
    _check_frame(entry, number)
    tag = f"{entry.sha256[:32]}-{number}"
    if tag in request.if_none_match:
        return _cacheable(Response(status=304), tag)
    rendered = runtime().renderer.frame(entry, number)
    return _cacheable(Response(rendered.data, mimetype=rendered.mimetype), tag)


@bp.get("/instances/<int:instance_id>/frames/<int:number>/values")
@requires(Permission.VIEW_IMAGES)
def values(instance_id: int, number: int) -> Any:
    """Return a grayscale frame's values as float32, for window/level."""
    entry = instance_or_404(instance_id)
    _check_frame(entry, number)
    if entry.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        abort(404)
    gray = runtime().renderer.values(entry, number)
    response = Response(
        gray.values.astype("<f4").tobytes(), mimetype="application/octet-stream"
    )
    response.headers["X-Rows"] = str(gray.values.shape[0])
    response.headers["X-Columns"] = str(gray.values.shape[1])
    response.headers["X-Minimum"] = repr(gray.minimum)
    response.headers["X-Maximum"] = repr(gray.maximum)
    response.headers["X-Invert"] = "1" if gray.invert else "0"
    return _cacheable(response, f"{entry.sha256[:32]}-{number}-values")


@bp.get("/instances/<int:instance_id>/thumbnail")
@requires(Permission.VIEW_IMAGES)
def thumbnail(instance_id: int) -> Any:
    """Return a small JPEG of the first frame."""
    entry = instance_or_404(instance_id)
    if not entry.rows or not entry.columns:
        abort(404)
    tag = f"{entry.sha256[:32]}-thumbnail"
    if tag in request.if_none_match:
        return _cacheable(Response(status=304), tag)
    data = runtime().renderer.thumbnail(entry)
    return _cacheable(Response(data, mimetype="image/jpeg"), tag)


@bp.get("/instances/<int:instance_id>/report")
@requires(Permission.VIEW_IMAGES)
def report(instance_id: int) -> Any:
    """Return a structured report as lines of text."""
    entry = instance_or_404(instance_id)
    path = runtime().options.storage.absolute(entry.file_path)
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    if "ContentSequence" not in dataset:
        abort(404)

    audit(
        "view-report",
        patient_id=entry.patient_id,
        study_uid=entry.study_uid,
        object_uid=entry.sop_uid,
    )
    lines = [
        {"depth": line.depth, "text": line.text, "heading": line.heading}
        for line in report_lines(dataset)
    ]
    return jsonify(lines=lines)


SQLITE_MAX_INTEGER = 2**63 - 1


def instance_or_404(instance_id: int) -> InstanceEntry:
    """Return the indexed instance, or end the request with 404."""
    if not 0 < instance_id <= SQLITE_MAX_INTEGER:
        abort(404)  # no such row, and SQLite could not even bind the number
    entry = get_instance(index_db(), instance_id)
    if entry is None:
        abort(404)
    return entry


def _check_frame(entry: InstanceEntry, number: int) -> None:
    if not entry.rows or not 1 <= number <= entry.number_of_frames:
        abort(404)


def _cacheable(response: Response, tag: str) -> Response:
    response.set_etag(tag)
    response.headers["Cache-Control"] = "private, no-cache"
    return response
