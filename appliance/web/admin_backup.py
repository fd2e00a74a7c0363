"""Admin: the backup status, "Back up now", and the restore wizard below.

The status page says in plain words when the last complete backup was
made, how large it is and how old, when the next one runs, how much room
the backup disk has left, and what went wrong lately. The restore wizard
(:mod:`appliance.web.admin_restore`) is nested in this blueprint, so that
its endpoints are named ``admin.backup.restore.…``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for

from appliance.web import admin_restore
from appliance.web.access import Permission, audit, requires
from appliance.web.admin_forms import ActionForm
from appliance.web.backup_banner import notices, refresh_banner
from appliance.web.runtime import runtime
from backup.history import recent_runs

logger = logging.getLogger(__name__)

bp = Blueprint("backup", __name__, url_prefix="/backup")
bp.register_blueprint(admin_restore.bp)

RECENT_RUNS = 10


@bp.get("/")
@requires(Permission.ADMINISTER)
def index() -> Any:
    """Show the backup status, the recent runs and the "Back up now" button."""
    job = runtime().backups
    if job is None:
        return render_template("admin_backup.html", summary=None, runs=[])

    # Worked out afresh here: the banner above the page agrees with it.
    now = datetime.now().astimezone()
    summary = job.summary(now)
    refresh_banner(notices(summary))
    return render_template(
        "admin_backup.html",
        summary=summary,
        runs=recent_runs(job.app_db, RECENT_RUNS),
        running=job.running(),
        now=now,
        action_form=ActionForm(),
    )


@bp.post("/now")
@requires(Permission.ADMINISTER)
def now() -> Any:
    """Start a backup at once, in the background, unless one runs already."""
    job = runtime().backups
    if job is None:
        abort(404)

    if not job.enabled:
        flash("Backups are off: no backup disk is set (setting backup_dir).", "error")
        return redirect(url_for("admin.backup.index"))
    if not job.start_now(trigger="web"):
        flash("A backup is already running; it was not started twice.", "error")
        return redirect(url_for("admin.backup.index"))

    audit("backup-started", detail="trigger=web")
    logger.info("Backup started from the web")
    flash(
        "Backup started. It runs in the background; this page shows the "
        "result when it is done.",
        "info",
    )
    return redirect(url_for("admin.backup.index"))
