"""Back-off and lock-out after failed logins, with a clock the tests move on."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from appliance import cli
from appliance.auth import lockout
from appliance.auth.lockout import LockoutRule
from appliance.auth.login import LoginPolicy, Outcome, attempt_login
from appliance.state import open_state
from appliance.state.users import Role, add_user
from tests.web.conftest import PASSWORD
from tests.web.office import make_office, try_login

RULE = LockoutRule(max_failures=5, lock_seconds=15 * 60, base_delay=1.0)
POLICY = LoginPolicy(account_rule=RULE, address_rule=LockoutRule(20, 15 * 60, 0.0))
NOW = 1_800_000_000.0


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    with closing(open_state(tmp_path / "app.db")) as opened:
        add_user(opened, "anna", Role.CLINICIAN, PASSWORD)
        yield opened


def attempt(
    conn: sqlite3.Connection,
    now: float,
    password: str = "wrong password!",
    name: str = "anna",
    address: str = "192.0.2.1",
) -> Outcome:
    return attempt_login(conn, name, password, address, now, POLICY).outcome


def test_the_wait_doubles_after_each_failure(conn: sqlite3.Connection) -> None:
    now = NOW
    for wait in (1, 2, 4, 8):
        assert attempt(conn, now) is Outcome.REFUSED
        # Too soon: refused without looking at the password, and not counted.
        assert attempt(conn, now + wait - 0.1, PASSWORD) is Outcome.THROTTLED
        now += wait + 0.1
    assert attempt(conn, now, PASSWORD) is Outcome.OK


def test_five_failures_lock_for_fifteen_minutes(conn: sqlite3.Connection) -> None:
    now = NOW
    for _ in range(5):
        assert attempt(conn, now) is Outcome.REFUSED
        now += 60
    # Even the right password is refused while locked.
    assert attempt(conn, now, PASSWORD) is Outcome.LOCKED
    result = attempt_login(conn, "anna", PASSWORD, "192.0.2.1", now, POLICY)
    assert result.wait_seconds == 14 * 60  # locked at the fifth, a minute ago

    now = NOW + 4 * 60 + 15 * 60 + 1
    assert attempt(conn, now, PASSWORD) is Outcome.OK


def test_old_failures_are_forgotten(conn: sqlite3.Connection) -> None:
    now = NOW
    for _ in range(4):
        attempt(conn, now)
        now += 16 * 60
    # Four failures, but never more than one within fifteen minutes.
    assert attempt(conn, now) is Outcome.REFUSED
    assert attempt(conn, now + 1.5, PASSWORD) is Outcome.OK


def test_a_good_login_clears_the_account_not_the_address(
    conn: sqlite3.Connection,
) -> None:
    add_user(conn, "bert", Role.FRONTDESK, PASSWORD)
    now = NOW
    for number in range(19):
        assert attempt(conn, now, name=f"guess{number}") is Outcome.REFUSED
        now += 2
    assert attempt(conn, now, PASSWORD, name="bert") is Outcome.OK
    # The address's count went on: its twentieth failure locks it for all.
    assert attempt(conn, now + 1, name="other") is Outcome.REFUSED
    assert attempt(conn, now + 2, PASSWORD, name="bert") is Outcome.LOCKED
    assert attempt(conn, now + 2, PASSWORD, address="192.0.2.2") is Outcome.OK


def test_unknown_names_are_counted_like_known_ones(conn: sqlite3.Connection) -> None:
    now = NOW
    for _ in range(5):
        assert attempt(conn, now, name="nobody") is Outcome.REFUSED
        now += 60
    assert attempt(conn, now, name="nobody") is Outcome.LOCKED
    assert lockout.locked_keys(conn, now)[0].key == "account:nobody"


def test_the_web_locks_and_unlocks(tmp_path: Path) -> None:
    office = make_office(tmp_path)
    browser = office.client()
    for _ in range(5):
        assert try_login(browser, "doc", "wrong password!").status_code == 401
        office.clock.advance(20)

    locked = try_login(browser, "doc")
    assert locked.status_code == 429
    assert "locked for 15 minutes" in locked.get_data(as_text=True)
    assert office.actions("doc")[:2] == ["login-refused", "login-failed"]
    assert "locked: account:doc" in office.audit(username="doc")[1].event.detail

    office.clock.advance(15 * 60)
    assert try_login(browser, "doc").status_code == 302


def test_the_web_asks_to_wait_after_a_failure(tmp_path: Path) -> None:
    office = make_office(tmp_path)
    browser = office.client()
    try_login(browser, "doc", "wrong password!")
    office.clock.advance(0.5)
    response = try_login(browser, "doc")
    assert response.status_code == 429
    assert "wait 1 seconds" in response.get_data(as_text=True)
    office.clock.advance(1)
    assert try_login(browser, "doc").status_code == 302


def test_user_unlock_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with closing(open_state(data_dir / "app.db")) as conn:
        for _ in range(5):
            lockout.record_failure(conn, "account:anna", RULE, NOW)
        assert lockout.locked_keys(conn, NOW)

    config = tmp_path / "appliance.toml"
    config.write_text(f'data_dir = "{data_dir}"\n')
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(""))
        assert cli.main(["--config", str(config), "user", "unlock", "Anna"]) == 0
    assert "Unlocked Anna" in capsys.readouterr().out
    with closing(open_state(data_dir / "app.db")) as conn:
        assert not lockout.locked_keys(conn, NOW)
        last = conn.execute(
            "SELECT action, address FROM audit ORDER BY id DESC"
        ).fetchone()
    assert tuple(last) == ("user-unlocked", "command line")
