"""Who may do what: roles, permissions, the login gate and the audit trail.

Every view declares the one permission it needs with :func:`requires`. The
gate in :func:`guard` runs before every request and fails closed: a view
that declares nothing is refused to everybody but the public pages. Roles:

========== =================================================================
frontdesk  the study list only (who came, which study): no images, reports
           or downloads; and the worklist (schedule the day's patients)
clinician  the list, studies, images, clips, reports and downloads, the
           worklist, and the patient identity review (merge, split, correct)
admin      everything a clinician may, and the admin pages (users, sessions,
           modalities, audit trail)
========== =================================================================
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from flask import abort, current_app, flash, g, redirect, request, session, url_for
from flask_login import current_user, logout_user
from werkzeug.wrappers import Response

from appliance.state.audit import AuditEvent, record
from appliance.state.sessions import end_session
from appliance.state.users import Role
from appliance.web.runtime import runtime, state_db

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

PUBLIC_ENDPOINTS = frozenset({"auth.login", "healthz", "static"})
PASSWORD_ENDPOINTS = frozenset({"auth.password", "auth.logout", "static"})
SEEN_KEY = "seen"
TIMED_OUT = "session_timed_out"


class Permission(enum.Enum):
    """One kind of thing a view lets a user do."""

    OWN_ACCOUNT = "own-account"
    LIST_STUDIES = "list-studies"
    VIEW_IMAGES = "view-images"
    DOWNLOAD = "download"
    REVIEW_IDENTITY = "review-identity"
    SCHEDULE = "schedule"
    ADMINISTER = "administer"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.FRONTDESK: frozenset(
        {Permission.OWN_ACCOUNT, Permission.LIST_STUDIES, Permission.SCHEDULE}
    ),
    Role.CLINICIAN: frozenset(
        {
            Permission.OWN_ACCOUNT,
            Permission.LIST_STUDIES,
            Permission.VIEW_IMAGES,
            Permission.DOWNLOAD,
            Permission.REVIEW_IDENTITY,
            Permission.SCHEDULE,
        }
    ),
    Role.ADMIN: frozenset(Permission),
}


def requires(permission: Permission) -> Callable[[F], F]:
    """Declare the permission a view needs; the gate enforces it."""

    def mark(view: F) -> F:
        view.permission = permission  # type: ignore[attr-defined]
        return view

    return mark


def may(permission: Permission) -> bool:
    """Tell whether the logged-in user has `permission` (for templates)."""
    if not current_user.is_authenticated:
        return False
    return permission in ROLE_PERMISSIONS[current_user.role]


def guard() -> Response | None:
    """Run before every request: login, idle time-out, password, permission."""
    endpoint = request.endpoint
    if endpoint is None or endpoint in PUBLIC_ENDPOINTS:
        return None

    if not current_user.is_authenticated:
        if g.pop(TIMED_OUT, False):
            flash("You were signed out after a while without activity.", "info")
        return redirect(url_for("auth.login", next=_here()))

    # Idle time-out, also kept in the signed cookie (the session row has
    # the authoritative one, checked when the user is loaded).
    idle_seconds = runtime().options.idle_minutes * 60
    seen = session.get(SEEN_KEY)
    now = runtime().options.clock()
    if not isinstance(seen, int | float) or now - seen > idle_seconds:
        end_session(state_db(), current_user.session_id)
        logout_user()
        session.clear()
        flash("You were signed out after a while without activity.", "info")
        return redirect(url_for("auth.login", next=_here()))
    session[SEEN_KEY] = now

    if current_user.must_change_password and endpoint not in PASSWORD_ENDPOINTS:
        return redirect(url_for("auth.password"))

    view = current_app.view_functions.get(endpoint)
    needed = getattr(view, "permission", None)
    if needed is None or not may(needed):
        abort(403)
    return None


def audit(
    action: str,
    *,
    patient_id: str = "",
    study_uid: str = "",
    object_uid: str = "",
    detail: str = "",
    username: str | None = None,
) -> None:
    """Record what the current user did, from which address, in ``app.db``."""
    name = username if username is not None else str(current_user.name)
    record(
        state_db(),
        AuditEvent(
            username=name,
            action=action,
            address=request.remote_addr or "",
            patient_id=patient_id,
            study_uid=study_uid,
            object_uid=object_uid,
            detail=detail,
        ),
    )


def _here() -> str:
    return request.full_path if request.query_string else request.path
