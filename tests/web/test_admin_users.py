"""Admin: accounts from the web, and the password policy; each change audited."""

from __future__ import annotations

import re
from contextlib import closing
from pathlib import Path

import pytest

from appliance.state import open_state
from appliance.state.users import (
    Role,
    get_user_by_name,
    record_directory_login,
)
from tests.web.conftest import PASSWORD, csrf_token
from tests.web.office import Office, make_office, post, try_login

_SECRET = re.compile(r'id="temporary-password"><code>([^<]+)</code>')


@pytest.fixture
def office(tmp_path: Path) -> Office:
    return make_office(tmp_path)


def user_id(office: Office, name: str) -> int:
    with closing(open_state(office.app_db)) as conn:
        user = get_user_by_name(conn, name)
    assert user is not None
    return user.id


def temporary_password(html: str) -> str:
    match = _SECRET.search(html)
    assert match, html
    return match.group(1)


def change_password(office: Office, name: str, current: str, new: str) -> int:
    browser = office.client()
    assert try_login(browser, name, current).headers["Location"] == "/account/password"
    page = browser.get("/account/password").get_data(as_text=True)
    form = {"current": current, "new": new, "confirm": new}
    response = browser.post(
        "/account/password", data={**form, "csrf_token": csrf_token(page)}
    )
    return int(response.status_code)


def test_the_users_page_lists_accounts(office: Office) -> None:
    page = office.client("admin1").get("/admin/users/").get_data(as_text=True)
    for name in ("admin1", "doc", "desk"):
        assert f"<td>{name}</td>" in page
    assert "never" not in page.split("<td>admin1</td>", 1)[1].split("</tr>")[0]


def test_an_admin_adds_a_user_who_then_chooses_a_password(office: Office) -> None:
    admin = office.client("admin1")
    response = post(admin, "/admin/users/new", {"name": "nina", "role": "clinician"})
    assert response.status_code == 200
    password = temporary_password(response.get_data(as_text=True))
    assert office.audit()[0].event.detail == "user nina, role clinician"
    assert office.actions()[0] == "user-added"

    assert change_password(office, "nina", password, "very own choice 42") == 302
    browser = office.client()
    assert try_login(browser, "nina", "very own choice 42").headers["Location"] == "/"


def test_a_bad_new_user_is_refused(office: Office) -> None:
    admin = office.client("admin1")
    taken = post(admin, "/admin/users/new", {"name": "DOC", "role": "clinician"})
    assert taken.status_code == 400
    assert "already exists" in taken.get_data(as_text=True)
    bad_role = post(admin, "/admin/users/new", {"name": "x1", "role": "owner"})
    assert bad_role.status_code == 200 and "user-added" not in office.actions()


def test_a_reset_ends_the_sessions_and_forces_a_new_password(office: Office) -> None:
    doc = office.client("doc")
    admin = office.client("admin1")
    response = post(admin, f"/admin/users/{user_id(office, 'doc')}/reset-password")
    password = temporary_password(response.get_data(as_text=True))

    assert doc.get("/").status_code == 302
    assert try_login(office.client(), "doc").status_code == 401
    office.clock.advance(2)  # the back-off after a failed login
    assert change_password(office, "doc", password, "a fresh secret of mine 7") == 302
    assert "user-password-reset" in office.actions("admin1")


def test_disable_logs_out_and_enable_lets_in(office: Office) -> None:
    doc = office.client("doc")
    admin = office.client("admin1")
    doc_id = user_id(office, "doc")

    assert post(admin, f"/admin/users/{doc_id}/disable").status_code == 302
    assert doc.get("/").status_code == 302
    assert try_login(office.client(), "doc").status_code == 401
    page = admin.get("/admin/users/").get_data(as_text=True)
    assert "disabled</span>" in page

    post(admin, f"/admin/users/{doc_id}/enable")
    assert try_login(office.client(), "doc").status_code == 302
    assert office.actions("admin1")[:2] == ["user-enabled", "user-disabled"]


def test_a_role_change_applies_at_once(office: Office) -> None:
    desk = office.client("desk")
    admin = office.client("admin1")
    post(admin, f"/admin/users/{user_id(office, 'desk')}/role", {"role": "clinician"})
    assert office.audit()[0].event.detail == "user desk: frontdesk -> clinician"
    # Sessions end with a role change; a new login has the new role.
    assert desk.get("/").status_code == 302
    desk = office.client("desk")
    assert desk.get("/admin/users/").status_code == 403
    study = desk.get("/studies/1.2.3")
    assert study.status_code == 404  # allowed now, and there is no such study


def test_an_admin_cannot_disable_or_demote_themself(office: Office) -> None:
    admin = office.client("admin1")
    me = user_id(office, "admin1")
    response = post(admin, f"/admin/users/{me}/disable", follow_redirects=True)
    assert "cannot disable your own account" in response.get_data(as_text=True)
    post(admin, f"/admin/users/{me}/role", {"role": "frontdesk"})
    with closing(open_state(office.app_db)) as conn:
        user = get_user_by_name(conn, "admin1")
    assert user is not None and user.role is Role.ADMIN and not user.disabled


def test_an_admin_unlocks_a_locked_account(office: Office) -> None:
    for _ in range(5):
        try_login(office.client(), "doc", "wrong password!")
        office.clock.advance(20)
    assert try_login(office.client(), "doc").status_code == 429

    admin = office.client("admin1")
    assert "locked until" in admin.get("/admin/users/").get_data(as_text=True)
    post(admin, f"/admin/users/{user_id(office, 'doc')}/unlock")
    assert try_login(office.client(), "doc").status_code == 302
    assert "user-unlocked" in office.actions("admin1")


def test_directory_accounts_keep_their_password_and_role_there(
    office: Office,
) -> None:
    with closing(open_state(office.app_db)) as conn:
        record_directory_login(conn, "ldapuser", Role.CLINICIAN, "uid=ldapuser")
    admin = office.client("admin1")
    target = user_id(office, "ldapuser")
    reset = post(admin, f"/admin/users/{target}/reset-password", follow_redirects=True)
    assert "kept in the directory" in reset.get_data(as_text=True)
    role = post(admin, f"/admin/users/{target}/role", {"role": "admin"})
    assert role.status_code == 302
    with closing(open_state(office.app_db)) as conn:
        user = get_user_by_name(conn, "ldapuser")
    assert user is not None and user.role is Role.CLINICIAN


@pytest.mark.parametrize(
    ("new", "why"),
    [
        ("short1", "at least 10 characters"),
        ("Password2024!", "among the first ones a guesser tries"),
        ("1234567890", "among the first ones a guesser tries"),
        ("doc-is-my-name", "must not contain the user name"),
        ("abababababab", "at least 5 different characters"),
    ],
)
def test_the_password_policy(office: Office, new: str, why: str) -> None:
    doc = office.client("doc")
    page = doc.get("/account/password").get_data(as_text=True)
    form = {"current": PASSWORD, "new": new, "confirm": new}
    response = doc.post(
        "/account/password", data={**form, "csrf_token": csrf_token(page)}
    )
    text = response.get_data(as_text=True)
    if why.startswith("at least 10"):
        assert response.status_code == 200  # the form's own length check
    else:
        assert response.status_code == 400
        assert why in text


def test_a_password_change_ends_the_other_sessions_only(office: Office) -> None:
    laptop = office.client("doc")
    desktop = office.client("doc")
    page = desktop.get("/account/password").get_data(as_text=True)
    new = "the new secret one 9"
    form = {"current": PASSWORD, "new": new, "confirm": new}
    response = desktop.post(
        "/account/password", data={**form, "csrf_token": csrf_token(page)}
    )
    assert response.status_code == 302
    assert desktop.get("/").status_code == 200
    assert laptop.get("/").status_code == 302
    assert office.actions("doc")[1] == "password-changed"
