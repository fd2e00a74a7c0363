"""The ``appliance user`` commands: local accounts in ``app.db``.

::

    appliance user add NAME --role admin|clinician|frontdesk [--temporary]
    appliance user passwd NAME [--temporary]
    appliance user list
    appliance user disable NAME
    appliance user enable NAME
    appliance user unlock NAME

Passwords are read from a prompt, twice, on a terminal; otherwise one line
of standard input (for scripts: ``echo "$PW" | appliance user add ...``).
They never appear on the command line, where ``ps`` would show them.
``--temporary`` makes the user choose a new password at the first login.
``unlock`` lifts a lock-out after failed logins. Every change is written to
the audit trail under the operating system's user name.
"""

from __future__ import annotations

import argparse
import getpass
import sqlite3
import sys
from contextlib import closing
from typing import TextIO

from appliance.auth import lockout
from appliance.config import Settings
from appliance.service import DataPaths, prepare_state
from appliance.state import users
from appliance.state.audit import record_outside_web
from appliance.state.schema import open_state


def add_user_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``user add|passwd|list|disable|enable`` to the ``appliance`` command."""
    user = commands.add_parser("user", help="web accounts")
    actions = user.add_subparsers(dest="action", required=True)

    add = actions.add_parser("add", help="create an account")
    add.add_argument("name")
    add.add_argument("--role", required=True, type=users.parse_role)
    add.add_argument(
        "--temporary", action="store_true", help="must change it at first login"
    )
    add.set_defaults(run=_add)

    passwd = actions.add_parser("passwd", help="set an account's password")
    passwd.add_argument("name")
    passwd.add_argument(
        "--temporary", action="store_true", help="must change it at next login"
    )
    passwd.set_defaults(run=_passwd)

    listing = actions.add_parser("list", help="show accounts")
    listing.set_defaults(run=_list)

    for name, disabled in (("disable", True), ("enable", False)):
        toggle = actions.add_parser(name, help=f"{name} an account")
        toggle.add_argument("name")
        toggle.set_defaults(run=_toggle, disabled=disabled)

    unlock = actions.add_parser("unlock", help="lift a lock-out after failed logins")
    unlock.add_argument("name")
    unlock.set_defaults(run=_unlock)


def read_password(stdin: TextIO | None = None) -> str:
    """Read a new password: prompted twice on a terminal, else one stdin line.

    Raises
    ------
    ValueError
        If the two entries differ or the password breaks the policy.
    """
    stream = stdin or sys.stdin
    if stream.isatty():
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            raise ValueError("the two passwords differ")
    else:
        password = stream.readline().rstrip("\r\n")
    users.check_password_policy(password)
    return password


def _connect(settings: Settings) -> closing[sqlite3.Connection]:
    paths = DataPaths(settings.data_dir)
    prepare_state(paths)
    return closing(open_state(paths.app_db))


def _add(settings: Settings, args: argparse.Namespace) -> int:
    password = read_password()
    with _connect(settings) as conn:
        user = users.add_user(
            conn, args.name, args.role, password, must_change_password=args.temporary
        )
    _audit(settings, "user-added", f"user {user.name}, role {user.role.value}")
    print(f"Added {user.name} ({user.role.value})")
    return 0


def _passwd(settings: Settings, args: argparse.Namespace) -> int:
    password = read_password()
    with _connect(settings) as conn:
        user = users.set_password(
            conn, args.name, password, must_change_password=args.temporary
        )
    _audit(settings, "user-password-reset", f"user {user.name}; sessions ended")
    print(f"Changed the password of {user.name}")
    return 0


def _list(settings: Settings, _args: argparse.Namespace) -> int:
    with _connect(settings) as conn:
        accounts = users.list_users(conn)
    if not accounts:
        print("No account yet: `appliance serve` creates 'admin' on first start.")
    for user in accounts:
        flags = [
            flag
            for flag, on in (
                ("disabled", user.disabled),
                ("must-change-password", user.must_change_password),
                ("directory", not user.is_local),
            )
            if on
        ]
        print(
            f"{user.name:<20} {user.role.value:<10}"
            f" last login {user.last_login_at or 'never':<26} {' '.join(flags)}"
        )
    return 0


def _toggle(settings: Settings, args: argparse.Namespace) -> int:
    with _connect(settings) as conn:
        user = users.set_disabled(conn, args.name, args.disabled)
    action = "user-disabled" if user.disabled else "user-enabled"
    _audit(settings, action, f"user {user.name}")
    print(f"{'Disabled' if user.disabled else 'Enabled'} {user.name}")
    return 0


def _unlock(settings: Settings, args: argparse.Namespace) -> int:
    with _connect(settings) as conn:
        cleared = lockout.clear(conn, lockout.account_key(args.name))
    if not cleared:
        print(f"{args.name} was not locked")
        return 0
    _audit(settings, "user-unlocked", f"user {args.name.strip()}")
    print(f"Unlocked {args.name.strip()}")
    return 0


def _audit(settings: Settings, action: str, detail: str) -> None:
    record_outside_web(DataPaths(settings.data_dir).app_db, action, detail)
