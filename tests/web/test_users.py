"""Accounts in app.db, and the ``appliance user`` commands."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from appliance import cli
from appliance.cli_users import read_password
from appliance.state import open_state
from appliance.state.users import (
    Role,
    add_user,
    authenticate,
    count_users,
    create_first_admin,
    get_user_by_name,
    list_users,
    parse_role,
    set_disabled,
    set_password,
    verify_password,
)

PASSWORD = "long enough secret"


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    with closing(open_state(tmp_path / "app.db")) as opened:
        yield opened


def test_add_and_authenticate(conn: sqlite3.Connection) -> None:
    user = add_user(conn, "Anna", Role.CLINICIAN, PASSWORD)
    assert user.role is Role.CLINICIAN and not user.must_change_password
    stored = conn.execute("SELECT password_hash FROM users").fetchone()[0]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored

    assert authenticate(conn, "anna", "wrong password!") is None
    logged_in = authenticate(conn, "ANNA", PASSWORD)
    assert logged_in is not None and logged_in.last_login_at is not None


def test_names_roles_and_policy_are_checked(conn: sqlite3.Connection) -> None:
    add_user(conn, "anna", Role.FRONTDESK, PASSWORD)
    with pytest.raises(ValueError, match="already exists"):
        add_user(conn, "ANNA", Role.ADMIN, PASSWORD)
    with pytest.raises(ValueError, match="at least"):
        add_user(conn, "bob", Role.ADMIN, "short")
    with pytest.raises(ValueError, match="user name"):
        add_user(conn, "bad name", Role.ADMIN, PASSWORD)
    assert parse_role("Front-Desk") is Role.FRONTDESK
    with pytest.raises(ValueError, match="role must be"):
        parse_role("nurse")


def test_disable_and_passwd_change_the_session_token(conn: sqlite3.Connection) -> None:
    first = add_user(conn, "anna", Role.ADMIN, PASSWORD)
    disabled = set_disabled(conn, "anna", True)
    assert disabled.disabled and disabled.session_token != first.session_token
    assert authenticate(conn, "anna", PASSWORD) is None
    assert not verify_password(conn, "anna", PASSWORD)

    set_disabled(conn, "anna", False)
    changed = set_password(conn, "anna", "another long one", must_change_password=True)
    assert changed.must_change_password
    assert authenticate(conn, "anna", "another long one") is not None
    with pytest.raises(ValueError, match="no user"):
        set_password(conn, "nobody", PASSWORD)


def test_first_admin_only_once(conn: sqlite3.Connection) -> None:
    password = create_first_admin(conn)
    assert password and len(password) >= 12
    admin = get_user_by_name(conn, "admin")
    assert admin is not None and admin.must_change_password and admin.role is Role.ADMIN
    assert create_first_admin(conn) is None
    assert count_users(conn) == 1


def run_cli(tmp_path: Path, *args: str, stdin: str = "") -> int:
    """Run the command in-process, with a piped (non-terminal) stdin."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(stdin))
        return cli.main(["--config", str(write_config(tmp_path)), *args])


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "appliance.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return config


def test_user_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run_cli(
            tmp_path,
            "user",
            "add",
            "anna",
            "--role",
            "clinician",
            stdin=PASSWORD + "\n",
        )
        == 0
    )
    assert (
        run_cli(
            tmp_path,
            "user",
            "add",
            "desk",
            "--role",
            "frontdesk",
            "--temporary",
            stdin=PASSWORD + "\n",
        )
        == 0
    )
    assert (
        run_cli(tmp_path, "user", "add", "x", "--role", "clinician", stdin="short\n")
        == 2
    )
    assert run_cli(tmp_path, "user", "passwd", "anna", stdin="new long password\n") == 0
    assert run_cli(tmp_path, "user", "disable", "desk") == 0
    assert run_cli(tmp_path, "user", "list") == 0
    out = capsys.readouterr().out
    assert "Added anna (clinician)" in out
    assert "disabled" in out and "must-change-password" in out

    with closing(open_state(tmp_path / "data" / "app.db")) as conn:
        assert authenticate(conn, "anna", "new long password") is not None
        assert [u.name for u in list_users(conn)] == ["anna", "desk"]
    assert run_cli(tmp_path, "user", "disable", "nobody") == 2


def test_password_prompt_reads_a_line_from_a_pipe() -> None:
    assert read_password(io.StringIO(PASSWORD + "\n")) == PASSWORD
    with pytest.raises(ValueError):
        read_password(io.StringIO("short\n"))
