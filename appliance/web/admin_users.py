"""Admin: accounts. Add, change the role, disable or enable, reset, unlock.

A new account and a reset get a random temporary password, shown once to
the admin, which the user must change at the first login. Directory (LDAP)
accounts appear here after their first login; their passwords and roles
come from the directory, so only disabling them here (which overrides the
directory) and unlocking apply. No change may leave the appliance without
an enabled local admin, so that somebody can always get in.
"""

from __future__ import annotations

import secrets
import sqlite3
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user

from appliance.auth import lockout
from appliance.auth.passwords import PasswordPolicyError, check_password
from appliance.state import users
from appliance.state.users import Role, User
from appliance.web.access import Permission, audit, requires
from appliance.web.admin_forms import ROLE_CHOICES, ActionForm, NewUserForm, RoleForm
from appliance.web.runtime import runtime, state_db

bp = Blueprint("users", __name__, url_prefix="/users")


@bp.get("/")
@requires(Permission.ADMINISTER)
def index() -> Any:
    """List every account with its role, state, last login and lock."""
    conn = state_db()
    options = runtime().options
    locks = {
        lock.name: lock
        for lock in lockout.locked_keys(conn, options.clock())
        if lock.key.startswith(lockout.ACCOUNT)
    }
    return render_template(
        "admin_users.html",
        accounts=users.list_users(conn),
        locks=locks,
        role_choices=ROLE_CHOICES,
        action_form=ActionForm(),
        directory=options.login.directory is not None,
    )


@bp.route("/new", methods=["GET", "POST"])
@requires(Permission.ADMINISTER)
def add() -> Any:
    """Create a local account with a temporary password shown once."""
    form = NewUserForm()
    if not form.validate_on_submit():
        return render_template(
            "admin_user_new.html", form=form, role_choices=ROLE_CHOICES
        )

    name = (form.name.data or "").strip()
    password = temporary_password(name)
    try:
        user = users.add_user(
            state_db(), name, Role(form.role.data), password, must_change_password=True
        )
    except ValueError as exc:
        flash(_sentence(exc), "error")
        return render_template(
            "admin_user_new.html", form=form, role_choices=ROLE_CHOICES
        ), 400
    audit("user-added", detail=f"user {user.name}, role {user.role.value}")
    return render_template("admin_user_password.html", user=user, password=password)


@bp.post("/<int:user_id>/role")
@requires(Permission.ADMINISTER)
def role(user_id: int) -> Any:
    """Give an account another role (local accounts only)."""
    user = _user_or_404(user_id)
    form = RoleForm()
    if not form.validate_on_submit():
        abort(400)
    new_role = Role(form.role.data)
    refusal = _refusal(state_db(), user, new_role=new_role)
    if refusal:
        return _back(refusal, "error")

    users.set_role(state_db(), user.name, new_role)
    audit(
        "user-role-changed",
        detail=f"user {user.name}: {user.role.value} -> {new_role.value}",
    )
    return _back(f"{user.name} is now {new_role.value}.")


@bp.post("/<int:user_id>/disable")
@requires(Permission.ADMINISTER)
def disable(user_id: int) -> Any:
    """Disable an account: it cannot log in and its sessions end."""
    user = _user_or_404(user_id)
    refusal = _refusal(state_db(), user, disabling=True)
    if refusal:
        return _back(refusal, "error")
    users.set_disabled(state_db(), user.name, True)
    audit("user-disabled", detail=f"user {user.name}")
    return _back(f"{user.name} is disabled and was logged out.")


@bp.post("/<int:user_id>/enable")
@requires(Permission.ADMINISTER)
def enable(user_id: int) -> Any:
    """Enable a disabled account again, without the failures it had."""
    user = _user_or_404(user_id)
    users.set_disabled(state_db(), user.name, False)
    lockout.clear(state_db(), lockout.account_key(user.name))
    audit("user-enabled", detail=f"user {user.name}")
    return _back(f"{user.name} is enabled.")


@bp.post("/<int:user_id>/reset-password")
@requires(Permission.ADMINISTER)
def reset_password(user_id: int) -> Any:
    """Give a local account a temporary password, to change at the next login."""
    user = _user_or_404(user_id)
    if not user.is_local:
        return _back(f"{user.name}'s password is kept in the directory.", "error")
    password = temporary_password(user.name)
    changed = users.set_password(
        state_db(), user.name, password, must_change_password=True
    )
    lockout.clear(state_db(), lockout.account_key(user.name))
    audit("user-password-reset", detail=f"user {user.name}; sessions ended")
    return render_template("admin_user_password.html", user=changed, password=password)


@bp.post("/<int:user_id>/unlock")
@requires(Permission.ADMINISTER)
def unlock(user_id: int) -> Any:
    """Lift a lock-out after failed logins."""
    user = _user_or_404(user_id)
    if lockout.clear(state_db(), lockout.account_key(user.name)):
        audit("user-unlocked", detail=f"user {user.name}")
    return _back(f"{user.name} may log in again.")


def temporary_password(name: str) -> str:
    """Return a random password that passes the policy for account `name`."""
    while True:
        password = secrets.token_urlsafe(12)
        try:
            check_password(password, name)
        except PasswordPolicyError:
            continue
        return password


def _refusal(
    conn: sqlite3.Connection,
    user: User,
    *,
    new_role: Role | None = None,
    disabling: bool = False,
) -> str:
    # Why a change may not be made, or "" when it may.
    if user.id == current_user.user.id:
        return "You cannot disable your own account or change your own role."
    if new_role is not None and not user.is_local:
        return f"{user.name}'s role comes from the directory's groups."
    losing_admin = disabling or new_role not in (None, Role.ADMIN)
    if losing_admin and _is_last_admin(conn, user):
        return f"{user.name} is the last enabled local admin."
    return ""


def _is_last_admin(conn: sqlite3.Connection, user: User) -> bool:
    admins = [
        account
        for account in users.list_users(conn)
        if account.role is Role.ADMIN and account.is_local and not account.disabled
    ]
    return [account.id for account in admins] == [user.id]


def _user_or_404(user_id: int) -> User:
    user = users.get_user(state_db(), user_id)
    if user is None:
        abort(404)
    return user


def _back(message: str, category: str = "info") -> Any:
    flash(message, category)
    return redirect(url_for("admin.users.index"))


def _sentence(exc: Exception) -> str:
    text = str(exc)
    return f"{text[:1].upper()}{text[1:]}."
