"""Logging in and out, and changing one's password.

A login makes a session row in ``app.db`` (:mod:`appliance.state.sessions`)
and the signed cookie holds its random token. Each request looks the row up:
a session that was ended (by logging out, by an admin, by a password change
or by disabling the account) or that timed out (idle or absolute) is gone,
and the browser is sent to the login page. Attempts are checked by
:func:`appliance.auth.login.attempt_login`: lock-out, local account, LDAP.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from flask import (
    Blueprint,
    Flask,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user

from appliance.auth.login import LoginResult, Outcome, attempt_login
from appliance.state import sessions, users
from appliance.state.users import User
from appliance.web.access import SEEN_KEY, TIMED_OUT, Permission, audit, requires
from appliance.web.forms import LoginForm, LogoutForm, PasswordForm
from appliance.web.runtime import runtime, state_db

logger = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)


class SessionUser(UserMixin):
    """The logged-in account as Flask-Login sees it."""

    def __init__(self, user: User, token: str, session_id: int) -> None:
        self.user = user
        self.name = user.name
        self.role = user.role
        self.must_change_password = user.must_change_password
        self.token = token
        self.session_id = session_id

    def get_id(self) -> str:
        """Return what the session cookie keeps: the session's random token."""
        return self.token


def init_login(app: Flask) -> None:
    """Set up Flask-Login: sessions and users come from ``app.db``."""
    manager = LoginManager()
    manager.session_protection = "basic"
    manager.init_app(app)
    manager.user_loader(load_session_user)


def load_session_user(token: str) -> SessionUser | None:
    """Return the user of the session this token opens; end it if timed out."""
    conn = state_db()
    options = runtime().options
    now = options.clock()
    found = sessions.find_session(conn, token)
    if found is None:
        return None

    user = users.get_user(conn, found.user_id)
    if user is None or user.disabled or options.timeouts.expired(found, now):
        sessions.end_session(conn, found.id)
        g.setdefault(TIMED_OUT, user is not None and not user.disabled)
        return None
    sessions.touch_session(conn, found, now)
    return SessionUser(user, token, found.id)


def start_session(user: User) -> None:
    """Log `user` in in this browser, with a fresh session and cookie."""
    # Nothing set in the cookie before the login carries over.
    now = runtime().options.clock()
    session.clear()
    session_id, token = sessions.start_session(
        state_db(),
        user.id,
        now,
        request.remote_addr or "",
        request.user_agent.string,
    )
    login_user(SessionUser(user, token, session_id))
    session[SEEN_KEY] = now


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Show the login form; on a good name and password, start a session."""
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("login.html", form=form)

    name = (form.name.data or "").strip()
    options = runtime().options
    result = attempt_login(
        state_db(),
        name,
        form.password.data or "",
        request.remote_addr or "",
        options.clock(),
        options.login,
    )
    user = result.user
    if user is None:
        return _refused(form, name, result)

    target = _safe_next(request.args.get("next"))
    start_session(user)
    sessions.end_expired(state_db(), options.timeouts, options.clock())
    audit("login", username=user.name, detail=result.detail)
    logger.info("User %s logged in from %s", user.name, request.remote_addr)
    if user.must_change_password:
        return redirect(url_for("auth.password"))
    return redirect(target)


def _refused(form: LoginForm, name: str, result: LoginResult) -> Any:
    # Locked and throttled attempts were not checked: "login-refused".
    checked = result.outcome in (Outcome.REFUSED, Outcome.DIRECTORY_DOWN)
    action = "login-failed" if checked else "login-refused"
    audit(action, username=name[:64], detail=result.detail)
    logger.info("Refused a login from %s (%s)", request.remote_addr, action)

    seconds = max(1, math.ceil(result.wait_seconds))
    minutes = math.ceil(seconds / 60)
    message, code = {
        Outcome.REFUSED: ("Wrong user name or password.", 401),
        Outcome.THROTTLED: (
            f"Too many failed logins: wait {seconds} seconds, then try again.",
            429,
        ),
        Outcome.LOCKED: (
            "Too many failed logins: this account or this computer is locked"
            f" for {minutes} minutes.",
            429,
        ),
        Outcome.DIRECTORY_DOWN: (
            "The directory (LDAP) server does not answer; local accounts still"
            " work. Please tell your administrator.",
            503,
        ),
    }[result.outcome]
    flash(message, "error")
    return render_template("login.html", form=form), code


@bp.post("/logout")
@requires(Permission.OWN_ACCOUNT)
def logout() -> Any:
    """End the session (a POST with a CSRF token)."""
    if LogoutForm().validate_on_submit():
        audit("logout")
        sessions.end_session(state_db(), current_user.session_id)
        logout_user()
        session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@requires(Permission.OWN_ACCOUNT)
def password() -> Any:
    """Change one's own password; required after a reset or the first login.

    The other sessions of the account end; this browser gets a new one.
    """
    if not current_user.user.is_local:
        code = 400 if request.method == "POST" else 200
        return render_template("password_directory.html"), code
    form = PasswordForm()
    if not form.validate_on_submit():
        return render_template("password.html", form=form)

    conn = state_db()
    if not users.verify_password(conn, current_user.name, form.current.data or ""):
        flash("The current password is wrong.", "error")
        return render_template("password.html", form=form), 400
    if form.new.data == form.current.data:
        flash("Choose a password different from the current one.", "error")
        return render_template("password.html", form=form), 400

    try:
        changed = users.set_password(conn, current_user.name, form.new.data or "")
    except ValueError as exc:
        flash(f"{str(exc)[:1].upper()}{str(exc)[1:]}.", "error")
        return render_template("password.html", form=form), 400
    start_session(changed)
    audit("password-changed", detail="the account's other sessions ended")
    flash("Your password was changed.", "info")
    return redirect(url_for("studies.index"))


def _safe_next(target: str | None) -> str:
    # Only a path on this site: never "//host" or an absolute URL.
    if not target or not target.startswith("/") or target.startswith("//"):
        return url_for("studies.index")
    if "\\" in target or "\r" in target or "\n" in target:
        return url_for("studies.index")
    return target
