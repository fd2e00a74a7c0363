"""Admin: the restore wizard, from picking a snapshot to serving from it.

The steps, each a page:

1. the list of complete snapshots (date, studies, images, size), each with
   a "Verify" button;
2. the verification, which hashes every file of the chosen snapshot against
   its manifest while a page that reloads itself shows the progress;
3. once the snapshot verified without fault, a form where the owner types
   ``RESTORE <snapshot name>``, after a plain warning about what is lost;
4. the copy into a new data folder and the switch to it, with progress;
5. the outcome, naming where the replaced data was kept (never deleted).

The work itself is :class:`appliance.restoring.RestoreWizard`'s. Starting a
verification or a restore is audited before it starts: after the switch,
``app.db`` is the restored one, and the row about the request stays in the
data kept aside.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from appliance.restoring import (
    NotVerifiedError,
    Phase,
    RestoreBusyError,
    RestoreStatus,
    RestoreWizard,
)
from appliance.web.access import Permission, audit, requires
from appliance.web.admin_forms import ActionForm
from appliance.web.runtime import runtime
from backup.snapshots import Snapshot

logger = logging.getLogger(__name__)

bp = Blueprint("restore", __name__, url_prefix="/restore")

CONFIRM_WORD = "RESTORE"
REFRESH_SECONDS = 2


@bp.get("/")
@requires(Permission.ADMINISTER)
def index() -> Any:
    """List the complete snapshots, newest first, to verify one."""
    wizard = runtime().restore
    snapshots = wizard.snapshots() if wizard is not None else []
    return render_template(
        "admin_restore.html",
        enabled=wizard is not None and wizard.target is not None,
        snapshots=snapshots,
        status=wizard.status() if wizard is not None else RestoreStatus(),
        action_form=ActionForm(),
    )


@bp.post("/verify")
@requires(Permission.ADMINISTER)
def verify() -> Any:
    """Start verifying the chosen snapshot; nothing is changed."""
    wizard, snapshot = _wizard_and_snapshot()

    audit("restore-verify-started", detail=f"snapshot={snapshot.name}")
    try:
        wizard.start_verify(snapshot.name, str(current_user.name))
    except RestoreBusyError:
        flash("The wizard is busy with another step; wait for it to end.", "error")
        return redirect(url_for("admin.backup.restore.progress"))
    logger.info("Verification of snapshot %s requested", snapshot.name)
    return redirect(url_for("admin.backup.restore.progress"))


@bp.get("/progress")
@requires(Permission.ADMINISTER)
def progress() -> Any:
    """Show where the wizard stands; the page reloads itself while it works."""
    wizard = runtime().restore
    status = wizard.status() if wizard is not None else RestoreStatus()
    if wizard is not None and status.phase == Phase.VERIFIED:
        snapshot = _find(wizard, status.snapshot or "")
        if snapshot is not None:
            return _confirm_page(wizard, snapshot)
    if status.phase == Phase.DONE:
        return render_template("admin_restore_done.html", status=status)
    return render_template(
        "admin_restore_progress.html",
        status=status,
        refresh=REFRESH_SECONDS if status.busy else None,
    )


@bp.post("/confirm")
@requires(Permission.ADMINISTER)
def confirm() -> Any:
    """Start restoring the verified snapshot, if the owner typed the phrase."""
    wizard, snapshot = _wizard_and_snapshot()

    # Refused unless just verified, and unless typed: never by accident.
    status = wizard.status()
    if status.phase != Phase.VERIFIED or status.snapshot != snapshot.name:
        audit("restore-refused", detail=f"snapshot={snapshot.name} not verified")
        return _not_verified(snapshot)
    typed = request.form.get("typed", "")
    if _normalised(typed) != _normalised(phrase(snapshot.name)):
        audit("restore-refused", detail=f"snapshot={snapshot.name} mistyped")
        return _confirm_page(wizard, snapshot, mistyped=True), 400

    # Audited before it starts: after the switch app.db is the restored one.
    audit("restore-started", detail=f"snapshot={snapshot.name}")
    try:
        wizard.start_restore(snapshot.name, str(current_user.name))
    except NotVerifiedError:
        return _not_verified(snapshot)
    except RestoreBusyError:
        flash("The wizard is busy with another step; wait for it to end.", "error")
        return redirect(url_for("admin.backup.restore.progress"))
    logger.info("Restore of snapshot %s requested", snapshot.name)
    return redirect(url_for("admin.backup.restore.progress"))


def phrase(name: str) -> str:
    """Return what the owner must type to restore snapshot `name`."""
    return f"{CONFIRM_WORD} {name}"


def _confirm_page(
    wizard: RestoreWizard, snapshot: Snapshot, mistyped: bool = False
) -> str:
    return render_template(
        "admin_restore_confirm.html",
        snapshot=snapshot,
        phrase=phrase(snapshot.name),
        mistyped=mistyped,
        data_dir=wizard.data_dir,
        action_form=ActionForm(),
    )


def _not_verified(snapshot: Snapshot) -> Any:
    flash(
        f"Verify {snapshot.name} first: only a snapshot that was just verified "
        "without fault can be restored. Nothing was changed.",
        "error",
    )
    return redirect(url_for("admin.backup.restore.index"))


def _wizard_and_snapshot() -> tuple[RestoreWizard, Snapshot]:
    # A snapshot only by the bare name of a complete one, never a path.
    wizard = runtime().restore
    if wizard is None:
        abort(404)
    snapshot = _find(wizard, request.form.get("snapshot", ""))
    if snapshot is None:
        abort(404)
    return wizard, snapshot


def _find(wizard: RestoreWizard, name: str) -> Snapshot | None:
    for snapshot in wizard.snapshots():
        if snapshot.name == name:
            return snapshot
    return None


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()
