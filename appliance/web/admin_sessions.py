"""Admin: the browsers logged in now. End one session, or all of a user's.

A session ended here is gone at once: that browser's next request is sent
to the login page. Sessions past their idle or absolute time-out are not
listed (they end at their next request, or at the next login of anyone).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user

from appliance.state import sessions, users
from appliance.state.sessions import Timeouts, WebSession
from appliance.web.access import Permission, audit, requires
from appliance.web.admin_forms import ActionForm
from appliance.web.runtime import runtime, state_db

bp = Blueprint("sessions", __name__, url_prefix="/sessions")


@bp.get("/")
@requires(Permission.ADMINISTER)
def index() -> Any:
    """List the sessions that have not timed out."""
    options = runtime().options
    now = options.clock()
    timeouts = options.timeouts
    active = [
        item
        for item in sessions.list_sessions(state_db())
        if not timeouts.expired(item, now)
    ]
    return render_template(
        "admin_sessions.html",
        sessions=active,
        ends={item.id: _ends_at(item, timeouts) for item in active},
        mine=current_user.session_id,
        action_form=ActionForm(),
    )


@bp.post("/<int:session_id>/end")
@requires(Permission.ADMINISTER)
def end(session_id: int) -> Any:
    """End one session."""
    found = sessions.get_session(state_db(), session_id)
    if found is None:
        abort(404)
    sessions.end_session(state_db(), session_id)
    audit(
        "session-ended",
        detail=f"session {found.id} of {found.username} from {found.address}",
    )
    flash(f"Ended a session of {found.username}.", "info")
    return _back(found)


@bp.post("/user/<int:user_id>/end")
@requires(Permission.ADMINISTER)
def end_user(user_id: int) -> Any:
    """End every session of one user (the admin's own current one excepted)."""
    user = users.get_user(state_db(), user_id)
    if user is None:
        abort(404)
    keep = current_user.session_id if user.id == current_user.user.id else None
    count = sessions.end_user_sessions(state_db(), user.id, keep=keep)
    audit("sessions-ended", detail=f"{count} session(s) of {user.name}")
    flash(f"Ended {count} session(s) of {user.name}.", "info")
    return redirect(url_for("admin.sessions.index"))


def _ends_at(item: WebSession, timeouts: Timeouts) -> float:
    return min(item.last_seen_at + timeouts.idle, item.created_at + timeouts.absolute)


def _back(ended: WebSession) -> Any:
    # Ending one's own session is a logout.
    if ended.id == current_user.session_id:
        return redirect(url_for("auth.login"))
    return redirect(url_for("admin.sessions.index"))
