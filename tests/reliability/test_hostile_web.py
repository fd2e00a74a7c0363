"""Hostile requests against the web: each is refused, and nothing breaks.

Against the real ``appliance serve`` over loopback: path traversal (plain,
percent-encoded and backslashed), SQL injection through every search field,
an oversized login form and very long URLs, and forged session cookies
(signed with another key, tampered with, of a disabled user, replayed after
logout). None may answer 500, leak a file or open a session; the service
must answer ``/healthz`` afterwards.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from datetime import date
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from pydicom.uid import generate_uid

from tests.web.archive import RENDER_FILES, Patient, data_file, rewrite
from tests.web.served import Served, prepare
from tests.web_session import WebSession

pytestmark = pytest.mark.e2e

PASSWORD = "a long hostile web password"
COOKIE = "appliance_session"
SMITH = Patient("SMITH^ANNA", "HOSTILE-1", "19800101", "F")

TRAVERSALS = (
    "/static/../../../../etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%252f..%252f..%252fetc%252fpasswd",
    "/static/....//....//....//etc/passwd",
    "/static/..\\..\\..\\..\\etc\\passwd",
    "/static/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "/static//etc/passwd",
    "/../../../../etc/passwd",
    "/studies/..%2f..%2f..%2fetc%2fpasswd",
    "/studies/../../../etc/passwd",
    "/instances/..%2f..%2fetc%2fpasswd/thumbnail",
    "/instances/-1/frames/1",
    "/instances/0/frames/1",
    "/instances/1/frames/0",
    "/instances/1/frames/99999999999999999999999999",
    "/instances/99999999999999999999999999/thumbnail",
    "/instances/1%00/thumbnail",
    "/download/study/..%2f..%2fetc%2fpasswd",
)
INJECTIONS = (
    "' OR 1=1 --",
    "' OR '1'='1",
    '" OR ""="',
    "'; DROP TABLE studies; --",
    "x' UNION SELECT name, sql FROM sqlite_master --",
    "%",
    "_",
    "\\",
    "%' --",
    "SMITH' --",
    "*",
)
FIELDS = ("name", "patient_id", "accession", "description", "modality")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """An appliance with one study and two clinicians."""
    root = tmp_path_factory.mktemp("hostile-web")
    appliance = prepare(root / "data")
    appliance.start()
    try:
        today = date.today().strftime("%Y%m%d")
        study = generate_uid()
        files = [
            rewrite(
                data_file(RENDER_FILES[key]),
                root / f"{key}.dcm",
                SMITH,
                study,
                study_date=today,
                description="Pelvis",
                accession="ACC-H1",
            )
            for key in ("cine", "rgb")
        ]
        assert appliance.send(files) == [0, 0]
        for name in ("doctor", "leaver", "visitor"):
            added = appliance.cli(
                "user", "add", name, "--role", "clinician", stdin=PASSWORD + "\n"
            )
            assert added.returncode == 0, added.stderr
        yield appliance
    finally:
        appliance.stop()


def raw_get(
    served: Served, path: str, cookie: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """GET `path` exactly as written (no normalising), with an optional cookie."""
    conn = http.client.HTTPConnection("127.0.0.1", served.http_port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        if cookie:
            conn.putheader("Cookie", f"{COOKIE}={cookie}")
        conn.endheaders()
        response = conn.getresponse()
        headers = {key.lower(): value for key, value in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        conn.close()


def logged_in(served: Served, name: str = "doctor") -> WebSession:
    """A browser session logged in through the form."""
    web = WebSession(served.url)
    assert web.login(name, PASSWORD).status == 302
    return web


def session_cookie(web: WebSession) -> str:
    """The session cookie's value in `web`'s cookie jar."""
    return next(c.value for c in web.cookies if c.name == COOKIE and c.value)


def assert_refused(status: int, headers: dict[str, str]) -> None:
    """Sent to the login page (or turned away), never let in."""
    assert status in (302, 401, 403), status
    if status == 302:
        assert "/login" in headers.get("location", "")


def assert_alive(served: Served) -> None:
    status, _headers, _body = raw_get(served, "/healthz")
    assert status == 200


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_is_refused(served: Served, path: str) -> None:
    cookie = session_cookie(logged_in(served))
    for with_cookie in ("", cookie):
        status, headers, body = raw_get(served, path, with_cookie)
        if status in (301, 308):
            # Werkzeug merges doubled slashes by redirecting; follow it once
            target = headers["location"].removeprefix(served.url)
            status, headers, body = raw_get(served, target, with_cookie)
        assert status in (302, 400, 401, 403, 404), (path, status)
        assert b"root:" not in body
    assert raw_get(served, "/static/viewer.js")[0] == 200
    assert_alive(served)


@pytest.mark.parametrize("field", FIELDS)
def test_sql_injection_in_search_fields_finds_nothing(
    served: Served, field: str
) -> None:
    web = logged_in(served)
    for text in INJECTIONS:
        reply = web.get("/?" + _query({field: text}))
        assert reply.status in (200, 400), (field, text, reply.status)
        if reply.status == 200:
            assert _rows(reply.text) == 0, (field, text)

    # The archive is intact and searching still works
    assert _rows(web.get("/?" + _query({"name": "smith"})).text) == 1
    assert _rows(web.get("/").text) == 1
    assert_alive(served)


@pytest.mark.parametrize(
    "field",
    ["name", "description", "patient_id", "accession", "modality"],
)
def test_a_nul_character_in_a_search_field_finds_nothing(
    served: Served, field: str
) -> None:
    reply = logged_in(served).get("/?" + _query({field: "\x00"}))
    assert reply.status in (200, 400)
    if reply.status == 200:
        assert _rows(reply.text) == 0


def test_sql_injection_in_dates_is_refused_or_ignored(served: Served) -> None:
    web = logged_in(served)
    for text in INJECTIONS + ("2024-01-01' OR 1=1 --", "99999999"):
        for field in ("date_from", "date_to"):
            reply = web.get("/?" + _query({field: text}))
            assert reply.status in (200, 400), (field, text, reply.status)
    assert_alive(served)


def test_an_oversized_login_form_is_refused(served: Served) -> None:
    body = b"name=doctor&password=" + b"x" * (20 * 1024 * 1024)
    status = _post_raw(served, "/login", body)
    assert status in (None, 400, 413), status
    assert_alive(served)


@pytest.mark.parametrize("length", [10_000, 100_000, 2_000_000])
def test_a_very_long_url_is_answered_sanely(served: Served, length: int) -> None:
    cookie = session_cookie(logged_in(served))
    try:
        status, _headers, _body = raw_get(served, "/?name=" + "A" * length, cookie)
    except (TimeoutError, ConnectionError, http.client.HTTPException):
        status = None
    assert status in (None, 200, 400, 414, 431), status
    assert_alive(served)


def test_a_cookie_signed_with_another_key_is_refused(served: Served) -> None:
    real = session_cookie(logged_in(served))
    attacker = Flask("attacker")
    attacker.secret_key = "not the appliance's key"
    serializer = SecureCookieSessionInterface().get_signing_serializer(attacker)
    assert serializer is not None
    _valid, payload = serializer.loads_unsafe(real)
    assert payload and "_user_id" in payload, "the session holds no user"

    forged = serializer.dumps(payload)
    assert_refused(*raw_get(served, "/", forged)[:2])


def test_a_tampered_cookie_is_refused(served: Served) -> None:
    real = session_cookie(logged_in(served))
    for position in (1, len(real) // 2, len(real) - 2):
        flipped = "A" if real[position] != "A" else "B"
        tampered = real[:position] + flipped + real[position + 1 :]
        assert_refused(*raw_get(served, "/", tampered)[:2])
    assert raw_get(served, "/", real)[0] == 200


def test_the_cookie_of_a_disabled_user_is_refused(served: Served) -> None:
    cookie = session_cookie(logged_in(served, "leaver"))
    assert raw_get(served, "/", cookie)[0] == 200

    disabled = served.cli("user", "disable", "leaver")
    assert disabled.returncode == 0, disabled.stderr
    assert_refused(*raw_get(served, "/", cookie)[:2])


def test_a_cookie_replayed_after_logout_is_refused(served: Served) -> None:
    web = logged_in(served, "visitor")
    page = web.get("/").text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token, "no logout form"
    cookie = session_cookie(web)
    assert _post_form(served, "/logout", cookie, token.group(1)) in (302, 303)
    assert_refused(*raw_get(served, "/", cookie)[:2])


def _post_form(served: Served, path: str, cookie: str, token: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", served.http_port, timeout=30)
    try:
        body = f"csrf_token={token}".encode()
        conn.request(
            "POST",
            path,
            body=body,
            headers={
                "Cookie": f"{COOKIE}={cookie}",
                "Content-Type": "application/x-www-form-urlencoded",
                "Referer": served.url + "/",
            },
        )
        return conn.getresponse().status
    finally:
        conn.close()


def _post_raw(served: Served, path: str, body: bytes) -> int | None:
    """POST `body`; None if the server closed the connection before answering."""
    conn = http.client.HTTPConnection("127.0.0.1", served.http_port, timeout=60)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/x-www-form-urlencoded")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        try:
            for start in range(0, len(body), 1 << 20):
                conn.send(body[start : start + (1 << 20)])
        except OSError:
            pass  # refused before the whole body went: the answer may follow
        return conn.getresponse().status
    except (ConnectionError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _query(fields: dict[str, str]) -> str:
    return urlencode(fields)


def _rows(page: str) -> int:
    return page.count('<tr class="')
