"""Logging in and out: passwords, CSRF, cookies, idle time-out, forced change."""

from __future__ import annotations

import time
import uuid
from contextlib import closing
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from appliance.state import open_state
from appliance.state.audit import recent
from appliance.state.users import Role, add_user, set_disabled, set_password
from appliance.web import create_app
from tests.web.conftest import PASSWORD, Archive, csrf_token, login, make_options


def new_user(archive: Archive, role: Role = Role.CLINICIAN, **kwargs: bool) -> str:
    """Create a user of its own for a test that changes it."""
    name = f"u{uuid.uuid4().hex[:10]}"
    with closing(open_state(archive.data_dir / "app.db")) as conn:
        add_user(conn, name, role, PASSWORD, **kwargs)
    return name


def audit_actions(archive: Archive, name: str) -> list[str]:
    with closing(open_state(archive.data_dir / "app.db")) as conn:
        return [entry.event.action for entry in recent(conn, 50, name)]


def test_good_login_leads_to_the_list(client: FlaskClient, archive: Archive) -> None:
    name = new_user(archive)
    response = login(client, name)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    assert audit_actions(archive, name) == ["list-studies", "login"]


def test_wrong_password_is_refused_and_audited(
    client: FlaskClient, archive: Archive
) -> None:
    name = new_user(archive)
    response = login(client, name, "not the password")
    assert response.status_code == 401
    assert b"Wrong user name or password." in response.data
    assert client.get("/").status_code == 302
    assert audit_actions(archive, name) == ["login-failed"]


def test_unknown_user_gets_the_same_answer(client: FlaskClient) -> None:
    response = login(client, "nobody-at-all", PASSWORD)
    assert response.status_code == 401
    assert b"Wrong user name or password." in response.data


def test_login_form_without_csrf_token_is_refused(client: FlaskClient) -> None:
    response = client.post("/login", data={"name": "doc", "password": PASSWORD})
    assert response.status_code == 400
    assert b"Form expired" in response.data


def test_logout_needs_the_csrf_token(doc_client: FlaskClient) -> None:
    assert doc_client.post("/logout").status_code == 400
    assert doc_client.get("/").status_code == 200

    token = csrf_token(doc_client.get("/").get_data(as_text=True))
    assert doc_client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert doc_client.get("/").status_code == 302


def test_next_goes_back_to_the_page_asked_for(
    client: FlaskClient, archive: Archive
) -> None:
    name = new_user(archive)
    page = client.get("/login?next=/studies/1.2.3").get_data(as_text=True)
    response = client.post(
        "/login?next=/studies/1.2.3",
        data={"name": name, "password": PASSWORD, "csrf_token": csrf_token(page)},
    )
    assert response.headers["Location"] == "/studies/1.2.3"


def test_next_never_leaves_the_site(client: FlaskClient, archive: Archive) -> None:
    name = new_user(archive)
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        page = client.get("/login").get_data(as_text=True)
        response = client.post(
            f"/login?next={target}",
            data={"name": name, "password": PASSWORD, "csrf_token": csrf_token(page)},
        )
        assert response.headers["Location"] == "/", target


def test_disabled_user_cannot_log_in_and_is_logged_out(
    app: Flask, archive: Archive
) -> None:
    name = new_user(archive)
    active = app.test_client()
    login(active, name)
    assert active.get("/").status_code == 200

    with closing(open_state(archive.data_dir / "app.db")) as conn:
        set_disabled(conn, name, True)
    assert active.get("/").status_code == 302
    assert login(app.test_client(), name).status_code == 401  # type: ignore[attr-defined]


def test_password_reset_ends_other_sessions(app: Flask, archive: Archive) -> None:
    name = new_user(archive)
    active = app.test_client()
    login(active, name)
    with closing(open_state(archive.data_dir / "app.db")) as conn:
        set_password(conn, name, "a brand new password")
    assert active.get("/").status_code == 302


def test_idle_session_times_out(doc_client: FlaskClient) -> None:
    with doc_client.session_transaction() as session:
        session["seen"] = time.time() - 16 * 60
    response = doc_client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    page = doc_client.get("/login").get_data(as_text=True)
    assert "signed out after a while without activity" in page


def test_forced_password_change(client: FlaskClient, archive: Archive) -> None:
    name = new_user(archive, must_change_password=True)
    response = login(client, name)
    assert response.headers["Location"] == "/account/password"
    assert client.get("/").headers["Location"] == "/account/password"

    # The new password must differ, and pass the length policy.
    page = client.get("/account/password").get_data(as_text=True)
    form = {"current": PASSWORD, "csrf_token": csrf_token(page)}
    short = client.post("/account/password", data={**form, "new": "x", "confirm": "x"})
    assert short.status_code == 200
    same = {**form, "new": PASSWORD, "confirm": PASSWORD}
    assert client.post("/account/password", data=same).status_code == 400

    new = "my own long password"
    done = client.post("/account/password", data={**form, "new": new, "confirm": new})
    assert done.status_code == 302
    assert client.get("/").status_code == 200
    assert "password-changed" in audit_actions(archive, name)


def test_session_cookie_flags(client: FlaskClient, archive: Archive) -> None:
    response = login(client, new_user(archive))
    cookie = response.headers["Set-Cookie"]  # type: ignore[attr-defined]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie


def test_secure_cookies_behind_https(archive: Archive, tmp_path: Path) -> None:
    options = make_options(
        archive.data_dir, secure_cookies=True, secret_file=tmp_path / "key"
    )
    app = create_app(lambda: {"ok": True}, options)
    client = app.test_client()
    response = login(client, "doc")
    assert "Secure" in response.headers["Set-Cookie"]  # type: ignore[attr-defined]


def test_pages_carry_security_headers(role_clients: dict[str, FlaskClient]) -> None:
    response = role_clients["doc"].get("/")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
