"""Admin pages: the audit trail (filter, export), and the areas below.

``/admin/users`` (:mod:`appliance.web.admin_users`), ``/admin/sessions``
(:mod:`appliance.web.admin_sessions`), ``/admin/modalities``
(:mod:`appliance.web.admin_modalities`) and ``/admin/backup``
(:mod:`appliance.web.admin_backup`) are blueprints nested in this one,
so that every admin endpoint is named ``admin.…``. Looking at the trail and
exporting it are audited too: the trail names patients.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from appliance import db
from appliance.state.audit_search import EXPORT_COLUMNS, AuditFilter, iterate, search
from appliance.web import admin_backup, admin_modalities, admin_sessions, admin_users
from appliance.web.access import Permission, audit, requires
from appliance.web.runtime import runtime, state_db

bp = Blueprint("admin", __name__, url_prefix="/admin")
bp.register_blueprint(admin_users.bp)
bp.register_blueprint(admin_sessions.bp)
bp.register_blueprint(admin_modalities.bp)
bp.register_blueprint(admin_backup.bp)

AUDIT_ROWS = 200
# A cell starting with one of these is a formula to a spreadsheet program.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@bp.app_template_filter("epoch")
def epoch_time(value: float) -> str:
    """Seconds since the epoch → ``2024-01-31 10:15 UTC``."""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")


@bp.get("/audit")
@requires(Permission.ADMINISTER)
def audit_trail() -> Any:
    """Show audit entries, newest first, filtered by user, patient and date."""
    wanted = _filter(request.args)
    before = request.args.get("before", type=int)
    entries = search(state_db(), wanted, before, AUDIT_ROWS)
    audit("view-audit", patient_id=wanted.patient_id, detail=_describe(wanted))

    older = None
    if len(entries) == AUDIT_ROWS:
        older = url_for(
            "admin.audit_trail", **_args(request.args), before=entries[-1].id
        )
    return render_template(
        "audit.html",
        entries=entries,
        args=request.args,
        user=wanted.username,
        older_url=older,
        newest_url=url_for("admin.audit_trail", **_args(request.args))
        if before
        else None,
        export_url=url_for("admin.audit_export", **_args(request.args)),
    )


@bp.get("/audit.csv")
@requires(Permission.ADMINISTER)
def audit_export() -> Any:
    """Export the filtered audit trail as CSV, oldest first, streamed."""
    wanted = _filter(request.args)
    audit("export-audit", patient_id=wanted.patient_id, detail=_describe(wanted))
    app_db = runtime().options.app_db
    response = Response(_csv_rows(app_db, wanted), mimetype="text/csv")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="audit-{stamp}.csv"'
    )
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _csv_rows(app_db: Path, wanted: AuditFilter) -> Iterator[str]:
    # A connection of its own: the request's is closed before streaming ends.
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    with closing(db.connect(app_db, readonly=True)) as conn:
        for count, row in enumerate(iterate(conn, wanted), start=1):
            writer.writerow([_cell(value) for value in row])
            if count % 500 == 0:
                yield _drain(buffer)
    yield _drain(buffer)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _cell(value: Any) -> Any:
    # Staff typed some of these values (searches): never let one run as a
    # formula when the export is opened in a spreadsheet.
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _filter(args: MultiDict[str, str]) -> AuditFilter:
    return AuditFilter(
        username=args.get("user", "").strip()[:64],
        patient_id=args.get("patient_id", "").strip()[:64],
        action=args.get("action", "").strip()[:64],
        date_from=_date(args.get("date_from")),
        date_to=_date(args.get("date_to")),
    )


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat((value or "").strip())
    except ValueError:
        return None


def _args(args: MultiDict[str, str]) -> dict[str, Any]:
    names = ("user", "patient_id", "action", "date_from", "date_to")
    return {name: args[name] for name in names if args.get(name)}


def _describe(wanted: AuditFilter) -> str:
    used = [f"{name}={value}" for name, value in vars(wanted).items() if value]
    return " ".join(used)
