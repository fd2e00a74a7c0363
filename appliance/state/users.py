"""User accounts: argon2 password hashes and one role each.

A user has a name (compared without regard to case), a role, and flags: a
forced password change (set for a new account made by someone else, and for
the first admin), and disabled. A password change, a role change or
disabling ends the account's web sessions (table ``sessions``).

An account is ``local`` (its password hash is here) or ``directory``: the
row of an LDAP user, made at its first login, with no password hash and the
role its groups gave at its last login (see :mod:`appliance.auth.login`).
"""

from __future__ import annotations

import enum
import functools
import re
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from appliance.auth.passwords import MIN_LENGTH, check_password

MIN_PASSWORD_LENGTH = MIN_LENGTH
FIRST_ADMIN = "admin"
LOCAL = "local"
DIRECTORY = "directory"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_hasher = PasswordHasher()


class Role(enum.StrEnum):
    """What a user may do; the web maps each role to its permissions."""

    ADMIN = "admin"
    CLINICIAN = "clinician"
    FRONTDESK = "frontdesk"


@dataclass(frozen=True)
class User:
    """One account, without its password hash."""

    id: int
    name: str
    role: Role
    must_change_password: bool
    disabled: bool
    session_token: str
    last_login_at: str | None
    source: str = LOCAL

    @property
    def is_local(self) -> bool:
        """True for an account with its password here, not in a directory."""
        return self.source == LOCAL


def parse_role(value: str) -> Role:
    """Return the role named `value` (``front-desk`` is read as frontdesk).

    Raises
    ------
    ValueError
        If no role has that name.
    """
    text = value.strip().lower().replace("-", "").replace("_", "")
    try:
        return Role(text)
    except ValueError:
        names = ", ".join(role.value for role in Role)
        raise ValueError(f"role must be one of {names}, got {value!r}") from None


def check_password_policy(password: str, name: str = "") -> None:
    """Refuse a password that is easy to guess (see :mod:`appliance.auth.passwords`).

    Raises
    ------
    ValueError
        Saying which rule the password breaks.
    """
    check_password(password, name)


def add_user(
    conn: sqlite3.Connection,
    name: str,
    role: Role,
    password: str,
    *,
    must_change_password: bool = False,
) -> User:
    """Create an account.

    Raises
    ------
    ValueError
        If the name is malformed or taken, or the password too short.
    """
    _check_name(name)
    check_password_policy(password, name)
    now = _now()
    try:
        conn.execute(
            "INSERT INTO users (name, password_hash, role, must_change_password,"
            " session_token, created_at, password_changed_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                _hasher.hash(password),
                role.value,
                int(must_change_password),
                secrets.token_hex(16),
                now,
                now,
            ),
        )
    except sqlite3.IntegrityError:
        raise ValueError(f"user {name!r} already exists") from None
    user = get_user_by_name(conn, name)
    assert user is not None
    return user


def get_user(conn: sqlite3.Connection, user_id: int) -> User | None:
    """Return the account with this row id, or None."""
    row = conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
    return _user(row) if row is not None else None


def get_user_by_name(conn: sqlite3.Connection, name: str) -> User | None:
    """Return the account with this name (any case), or None."""
    row = conn.execute("SELECT * FROM users WHERE name = ?", (name.strip(),)).fetchone()
    return _user(row) if row is not None else None


def list_users(conn: sqlite3.Connection) -> list[User]:
    """Return every account, by name."""
    rows = conn.execute("SELECT * FROM users ORDER BY name").fetchall()
    return [_user(row) for row in rows]


def count_users(conn: sqlite3.Connection) -> int:
    """Return how many accounts exist, disabled ones included."""
    return int(conn.execute("SELECT count(*) FROM users").fetchone()[0])


def authenticate(conn: sqlite3.Connection, name: str, password: str) -> User | None:
    """Check a name and password; on success record the login.

    A disabled account never authenticates. A hash made with older argon2
    parameters is replaced by one with the current parameters.

    Returns
    -------
    User or None
        The account, or None for a wrong name, a wrong password or a
        disabled account (the caller cannot tell which, on purpose).
    """
    row = conn.execute("SELECT * FROM users WHERE name = ?", (name.strip(),)).fetchone()
    if row is None:
        _verify(_dummy_hash(), password)
        return None
    if not _verify(row["password_hash"], password) or row["disabled"]:
        return None

    stored_hash = row["password_hash"]
    new_hash = (
        _hasher.hash(password) if _hasher.check_needs_rehash(stored_hash) else None
    )
    conn.execute(
        "UPDATE users SET last_login_at = ?,"
        " password_hash = coalesce(?, password_hash) WHERE id = ?",
        (_now(), new_hash, row["id"]),
    )
    return get_user(conn, int(row["id"]))


def verify_password(conn: sqlite3.Connection, name: str, password: str) -> bool:
    """Tell whether `password` is the enabled account `name`'s, changing nothing."""
    row = conn.execute(
        "SELECT password_hash, disabled FROM users WHERE name = ?", (name.strip(),)
    ).fetchone()
    if row is None:
        _verify(_dummy_hash(), password)
        return False
    return _verify(row["password_hash"], password) and not row["disabled"]


def set_password(
    conn: sqlite3.Connection,
    name: str,
    password: str,
    *,
    must_change_password: bool = False,
) -> User:
    """Give an account a new password; earlier login cookies stop working.

    Every session of the account ends (the web starts a new one for the
    browser that changed its own password).

    Raises
    ------
    ValueError
        If the account does not exist, is a directory account, or the
        password breaks the policy.
    """
    user = get_user_by_name(conn, name)
    if user is not None and not user.is_local:
        raise ValueError(f"{user.name!r} is a directory account: set it there")
    check_password_policy(password, name)
    with _transaction(conn):
        cursor = conn.execute(
            "UPDATE users SET password_hash = ?, must_change_password = ?,"
            " session_token = ?, password_changed_at = ? WHERE name = ?",
            (
                _hasher.hash(password),
                int(must_change_password),
                secrets.token_hex(16),
                _now(),
                name.strip(),
            ),
        )
        _end_sessions(conn, name)
    return _changed(conn, cursor, name)


def set_disabled(conn: sqlite3.Connection, name: str, disabled: bool) -> User:
    """Disable (or enable again) an account; disabling ends its sessions.

    Raises
    ------
    ValueError
        If the account does not exist.
    """
    with _transaction(conn):
        cursor = conn.execute(
            "UPDATE users SET disabled = ?, session_token = ? WHERE name = ?",
            (int(disabled), secrets.token_hex(16), name.strip()),
        )
        _end_sessions(conn, name)
    return _changed(conn, cursor, name)


def set_role(conn: sqlite3.Connection, name: str, role: Role) -> User:
    """Give an account another role; its sessions end, to start afresh.

    A directory account's role is set again from its groups at each login.

    Raises
    ------
    ValueError
        If the account does not exist.
    """
    with _transaction(conn):
        cursor = conn.execute(
            "UPDATE users SET role = ?, session_token = ? WHERE name = ?",
            (role.value, secrets.token_hex(16), name.strip()),
        )
        _end_sessions(conn, name)
    return _changed(conn, cursor, name)


def record_directory_login(
    conn: sqlite3.Connection, name: str, role: Role, dn: str
) -> User:
    """Create or refresh the local row of a directory account that logged in.

    The row has no password hash (the directory checks passwords); it holds
    the role from the directory's groups, refreshed now, so that sessions
    and the audit trail work as for a local account. A row that an admin
    disabled stays disabled.

    Raises
    ------
    ValueError
        If a local account has this name, or the name is malformed.
    """
    existing = get_user_by_name(conn, name)
    if existing is not None and existing.is_local:
        raise ValueError(f"{existing.name!r} is a local account")
    if existing is None:
        _check_name(name)
        now = _now()
        conn.execute(
            "INSERT INTO users (name, password_hash, role, session_token,"
            " created_at, password_changed_at, source, directory_dn)"
            " VALUES (?, '', ?, ?, ?, ?, ?, ?)",
            (name, role.value, secrets.token_hex(16), now, now, DIRECTORY, dn),
        )
    conn.execute(
        "UPDATE users SET role = ?, directory_dn = ?, last_login_at = ? WHERE name = ?",
        (role.value, dn, _now(), name.strip()),
    )
    user = get_user_by_name(conn, name)
    assert user is not None
    return user


def create_first_admin(conn: sqlite3.Connection) -> str | None:
    """Create the ``admin`` account when there is no account at all.

    Its password is random and must be changed at the first login.

    Returns
    -------
    str or None
        The one-time password, or None when accounts already existed.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        if count_users(conn):
            conn.execute("ROLLBACK")
            return None
        password = secrets.token_urlsafe(12)
        add_user(conn, FIRST_ADMIN, Role.ADMIN, password, must_change_password=True)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return password


@functools.cache
def _dummy_hash() -> str:
    # Verified when the name is unknown, so that a wrong name takes as long
    # as a wrong password and does not tell which accounts exist.
    return _hasher.hash(secrets.token_hex(16))


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(
            f"a user name is 1-64 letters, digits or ._@- characters, got {name!r}"
        )


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # Joins a transaction the caller holds; otherwise opens its own.
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _end_sessions(conn: sqlite3.Connection, name: str) -> None:
    conn.execute(
        "DELETE FROM sessions WHERE user_ref IN (SELECT id FROM users WHERE name = ?)",
        (name.strip(),),
    )


def _changed(conn: sqlite3.Connection, cursor: sqlite3.Cursor, name: str) -> User:
    if cursor.rowcount == 0:
        raise ValueError(f"no user named {name!r}")
    user = get_user_by_name(conn, name)
    assert user is not None
    return user


def _user(row: sqlite3.Row) -> User:
    return User(
        id=int(row["id"]),
        name=row["name"],
        role=Role(row["role"]),
        must_change_password=bool(row["must_change_password"]),
        disabled=bool(row["disabled"]),
        session_token=row["session_token"],
        last_login_at=row["last_login_at"],
        source=row["source"],
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
