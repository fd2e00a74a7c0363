"""One login attempt: lock-out first, then the local account, then LDAP.

A local account (one with its password in ``app.db``) is always checked
here and never in the directory, so that the local admin can log in while
the directory is down, and a directory user of the same name cannot take
the local account over. Any other name goes to the directory, when one is
configured; a directory user who gets in has a local row (no password
hash; the role from its groups, refreshed at every login) so that sessions
and the audit trail work alike for both.

Every refused attempt counts towards the lock-out of the account name and
of the address (:mod:`appliance.auth.lockout`), except when the directory
could not be asked: that is nobody's wrong password. The account backs off
after each failure; the address is only locked, after more failures than
an account: several people may share one address (a clinic's NAT), and
their typing mistakes must not slow each other down.
"""

from __future__ import annotations

import enum
import logging
import sqlite3
from dataclasses import dataclass

from appliance.auth import lockout
from appliance.auth.ldap import (
    Directory,
    DirectoryAccount,
    DirectoryConfig,
    DirectoryError,
    Refusal,
    directory_config,
)
from appliance.auth.lockout import LockoutRule
from appliance.config import Settings
from appliance.state import sessions, users
from appliance.state.users import User

logger = logging.getLogger(__name__)

# Records of failures this old are deleted when another failure comes.
FORGET_SECONDS = 24 * 3600
# These refusals mean the directory no longer lets the account in at all.
GONE = (Refusal.NOT_FOUND, Refusal.AMBIGUOUS, Refusal.DISABLED, Refusal.NO_ROLE)


@dataclass(frozen=True)
class LoginPolicy:
    """The rules of a login: lock-out per account and address, the directory."""

    account_rule: LockoutRule = LockoutRule(5, 15 * 60)
    address_rule: LockoutRule = LockoutRule(20, 15 * 60, base_delay=0.0)
    directory: DirectoryConfig | None = None


def login_policy(settings: Settings) -> LoginPolicy:
    """Build the login rules from the settings.

    Raises
    ------
    appliance.errors.ConfigError
        If the LDAP settings are incomplete or wrong.
    """
    lock_seconds = settings.login_lock_minutes * 60
    delay = float(settings.login_backoff_seconds)
    return LoginPolicy(
        account_rule=LockoutRule(settings.login_max_failures, lock_seconds, delay),
        address_rule=LockoutRule(
            settings.login_address_max_failures, lock_seconds, base_delay=0.0
        ),
        directory=directory_config(settings),
    )


class Outcome(enum.Enum):
    """How an attempt ended."""

    OK = "ok"
    REFUSED = "refused"
    THROTTLED = "throttled"
    LOCKED = "locked"
    DIRECTORY_DOWN = "directory-down"


@dataclass(frozen=True)
class LoginResult:
    """The outcome, the account on success, and a line for the audit trail."""

    outcome: Outcome
    user: User | None = None
    wait_seconds: float = 0.0
    detail: str = ""


def attempt_login(
    conn: sqlite3.Connection,
    name: str,
    password: str,
    address: str,
    now: float,
    policy: LoginPolicy,
) -> LoginResult:
    """Check one login attempt and count it.

    Parameters
    ----------
    conn : sqlite3.Connection
        ``app.db``.
    name, password : str
        As typed.
    address : str
        The browser's address.
    now : float
        Seconds since the epoch, from the caller's clock.
    policy : LoginPolicy
        Lock-out rules and the directory.

    Returns
    -------
    LoginResult
        With the account when the attempt succeeded.
    """
    name = name.strip()
    keys = (
        (lockout.account_key(name), policy.account_rule),
        (lockout.address_key(address), policy.address_rule),
    )

    # Locked out, or too soon after the last failure: the password is not
    # even looked at.
    held = [lockout.current_lock(conn, key, rule, now) for key, rule in keys]
    waits = [lock for lock in held if lock is not None]
    if waits:
        lock = max(waits, key=lambda item: item.until)
        outcome = Outcome.LOCKED if lock.locked else Outcome.THROTTLED
        return LoginResult(outcome, wait_seconds=lock.until - now, detail=lock.key)

    try:
        user, detail = _check(conn, name, password, policy.directory)
    except DirectoryError as exc:
        logger.warning("The directory cannot be asked: %s", exc)
        return LoginResult(Outcome.DIRECTORY_DOWN, detail=str(exc)[:200])

    if user is None:
        locked = [
            key for key, rule in keys if lockout.record_failure(conn, key, rule, now)
        ]
        lockout.forget_old(conn, now, FORGET_SECONDS)
        if locked:
            detail += f"; locked: {', '.join(locked)}"
        return LoginResult(Outcome.REFUSED, detail=detail)

    lockout.clear(conn, keys[0][0])
    return LoginResult(Outcome.OK, user=user, detail=detail)


def _check(
    conn: sqlite3.Connection,
    name: str,
    password: str,
    directory: DirectoryConfig | None,
) -> tuple[User | None, str]:
    existing = users.get_user_by_name(conn, name)
    if directory is None or (existing is not None and existing.is_local):
        return _check_local(conn, existing, name, password)
    return _check_directory(conn, existing, name, password, directory)


def _check_local(
    conn: sqlite3.Connection, existing: User | None, name: str, password: str
) -> tuple[User | None, str]:
    user = users.authenticate(conn, name, password)
    if user is not None:
        return user, "local account"
    if existing is None:
        return None, "unknown user"
    if existing.disabled:
        return None, "disabled account"
    if not existing.is_local:
        return None, "directory account, but no directory is configured"
    return None, "wrong password"


def _check_directory(
    conn: sqlite3.Connection,
    existing: User | None,
    name: str,
    password: str,
    directory: DirectoryConfig,
) -> tuple[User | None, str]:
    answer = Directory(directory).authenticate(name, password)
    if isinstance(answer, Refusal):
        if existing is not None and answer in GONE:
            # The directory dropped the account: its open sessions end too.
            sessions.end_user_sessions(conn, existing.id)
        return None, f"directory: {answer.value}"
    if existing is not None and existing.disabled:
        return None, "directory account disabled here by an admin"
    return _directory_user(conn, answer)


def _directory_user(
    conn: sqlite3.Connection, account: DirectoryAccount
) -> tuple[User | None, str]:
    try:
        user = users.record_directory_login(
            conn, account.name, account.role, account.dn
        )
    except ValueError as exc:
        return None, f"directory account not usable here: {exc}"
    return user, f"directory account, role {account.role.value} from its groups"
