"""LDAP users in the web: logging in through the form, the admin's view of them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from appliance.auth.ldap import DirectoryConfig
from appliance.auth.login import LoginPolicy
from appliance.state import open_state
from appliance.state.users import Role, get_user_by_name
from tests.ldap_server import (
    ADMINS,
    CLINICIANS,
    FRONTDESK,
    PEOPLE,
    READER_DN,
    READER_PASSWORD,
    Slapd,
    start_slapd,
)
from tests.web.office import Office, make_office, post, try_login

PASSWORD = "directory password 7"


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = start_slapd(tmp_path_factory.mktemp("slapd"))
    yield server
    server.stop()


@pytest.fixture
def office(slapd: Slapd, tmp_path: Path) -> Office:
    directory = DirectoryConfig(
        url=slapd.ldaps_url,
        ca_file=slapd.ca_file,
        bind_dn=READER_DN,
        bind_password=READER_PASSWORD,
        user_base=PEOPLE,
        user_filter="(uid={username})",
        group_roles=(
            (ADMINS, Role.ADMIN),
            (CLINICIANS, Role.CLINICIAN),
            (FRONTDESK, Role.FRONTDESK),
        ),
        timeout=5,
    )
    return make_office(tmp_path, login=LoginPolicy(directory=directory))


def person(slapd: Slapd, *groups: str) -> str:
    uid = f"w{uuid.uuid4().hex[:8]}"
    slapd.add_user(uid, PASSWORD, *groups)
    return uid


def test_a_directory_user_logs_in_with_the_role_of_their_group(
    slapd: Slapd, office: Office
) -> None:
    name = person(slapd, CLINICIANS)
    browser = office.client()
    assert try_login(browser, name, PASSWORD).headers["Location"] == "/"
    page = browser.get("/").get_data(as_text=True)
    assert f"{name} <small>(clinician)</small>" in page
    assert 'href="/account/password"' not in page
    password_page = browser.get("/account/password").get_data(as_text=True)
    assert "change your\n    password there" in password_page

    entry = office.audit(username=name)[1]
    assert entry.event.action == "login"
    assert entry.event.detail == "directory account, role clinician from its groups"
    users_page = office.client("admin1").get("/admin/users/").get_data(as_text=True)
    assert f"<td>{name}</td>\n      <td>clinician</td>\n      <td>directory</td>" in (
        users_page
    )


def test_a_deleted_directory_user_is_refused_and_logged_out(
    slapd: Slapd, office: Office
) -> None:
    name = person(slapd, FRONTDESK)
    browser = office.client()
    try_login(browser, name, PASSWORD)
    assert browser.get("/").status_code == 200

    slapd.delete(f"uid={name},{PEOPLE}")
    assert try_login(office.client(), name, PASSWORD).status_code == 401
    assert browser.get("/").status_code == 302
    failed = office.audit(username=name)[0]
    assert (failed.event.action, failed.event.detail) == (
        "login-failed",
        "directory: not found in the directory",
    )


def test_a_directory_admin_cannot_disable_the_last_local_admin(
    slapd: Slapd, office: Office
) -> None:
    name = person(slapd, ADMINS)
    browser = office.client()
    try_login(browser, name, PASSWORD)
    with closing(open_state(office.app_db)) as conn:
        local_admin = get_user_by_name(conn, "admin1")
    assert local_admin is not None

    response = post(
        browser, f"/admin/users/{local_admin.id}/disable", follow_redirects=True
    )
    assert "admin1 is the last enabled local admin" in response.get_data(as_text=True)
    demote = post(
        browser,
        f"/admin/users/{local_admin.id}/role",
        {"role": "clinician"},
        follow_redirects=True,
    )
    assert "last enabled local admin" in demote.get_data(as_text=True)
