"""Sessions kept in app.db: listed and ended by an admin, timed out by the clock."""

from __future__ import annotations

import re
from contextlib import closing
from pathlib import Path

import pytest

from appliance.state import open_state
from appliance.state.users import get_user_by_name
from tests.web.conftest import csrf_token
from tests.web.office import Office, make_office, post

_END = re.compile(r'action="(/admin/sessions/(\d+)/end)"')
CHROME = "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0"


@pytest.fixture
def office(tmp_path: Path) -> Office:
    return make_office(tmp_path)


def session_count(office: Office) -> int:
    with closing(open_state(office.app_db)) as conn:
        return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])


def test_the_admin_sees_who_is_logged_in_from_where(office: Office) -> None:
    office.client("doc", REMOTE_ADDR="192.0.2.21", HTTP_USER_AGENT=CHROME)
    admin = office.client("admin1")
    page = admin.get("/admin/sessions/").get_data(as_text=True)
    assert "192.0.2.21" in page and CHROME in page
    assert "admin1 <small>(this browser)</small>" in page


def test_ending_one_session_logs_that_browser_out(office: Office) -> None:
    laptop = office.client("doc", HTTP_USER_AGENT="laptop")
    desktop = office.client("doc", HTTP_USER_AGENT="desktop")
    admin = office.client("admin1")
    page = admin.get("/admin/sessions/").get_data(as_text=True)
    row = next(line for line in page.split("<tr>") if "laptop" in line)
    url = _END.search(row).group(1)  # type: ignore[union-attr]

    assert post(admin, url).status_code == 302
    assert laptop.get("/").status_code == 302
    assert desktop.get("/").status_code == 200
    assert office.actions("admin1")[0] == "session-ended"
    assert office.audit(username="admin1")[0].event.detail.startswith("session ")


def test_ending_all_of_a_users_sessions(office: Office) -> None:
    browsers = [office.client("doc") for _ in range(3)]
    admin = office.client("admin1")
    with closing(open_state(office.app_db)) as conn:
        doc = get_user_by_name(conn, "doc")
    assert doc is not None

    assert post(admin, f"/admin/sessions/user/{doc.id}/end").status_code == 302
    assert all(browser.get("/").status_code == 302 for browser in browsers)
    assert office.audit(username="admin1")[0].event.detail == "3 session(s) of doc"
    assert admin.get("/").status_code == 200


def test_an_idle_session_times_out_on_the_server(office: Office) -> None:
    doc = office.client("doc")
    office.clock.advance(14 * 60)
    assert doc.get("/").status_code == 200
    office.clock.advance(14 * 60)
    assert doc.get("/").status_code == 200

    office.clock.advance(16 * 60)
    # The session row is gone too, not only the cookie's stamp.
    with doc.session_transaction() as cookie:
        cookie["seen"] = office.clock.now
    response = doc.get("/")
    assert response.headers["Location"].startswith("/login")
    page = doc.get("/login").get_data(as_text=True)
    assert "signed out after a while without activity" in page
    assert session_count(office) == 0


def test_a_busy_session_still_ends_after_twelve_hours(office: Office) -> None:
    doc = office.client("doc")
    for _ in range(71):
        office.clock.advance(10 * 60)
        assert doc.get("/").status_code == 200
    office.clock.advance(10 * 60 + 1)
    assert doc.get("/").status_code == 302


def test_logout_ends_the_session_row(office: Office) -> None:
    doc = office.client("doc")
    assert session_count(office) == 1
    token = csrf_token(doc.get("/").get_data(as_text=True))
    doc.post("/logout", data={"csrf_token": token})
    assert session_count(office) == 0
    assert office.actions("doc")[0] == "logout"


def test_the_cookie_holds_no_user_id_only_a_token(office: Office) -> None:
    doc = office.client("doc")
    with doc.session_transaction() as cookie:
        token = cookie["_user_id"]
    assert len(token) >= 40 and ":" not in token
    with closing(open_state(office.app_db)) as conn:
        stored = conn.execute("SELECT token_hash FROM sessions").fetchone()[0]
    assert stored != token and len(stored) == 64
