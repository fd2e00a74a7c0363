"""Admin: the audit trail filtered and exported; the client's real address."""

from __future__ import annotations

import csv
import io
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from appliance.state import open_state
from appliance.state.audit import AuditEvent, record
from appliance.state.audit_chain import verify_chain
from tests.web.office import Office, make_office, try_login


@pytest.fixture
def office(tmp_path: Path) -> Office:
    made = make_office(tmp_path)
    with closing(open_state(made.app_db)) as conn:
        record(conn, AuditEvent("doc", "view-study", "192.0.2.5", "P001", "1.2.3"))
        record(conn, AuditEvent("doc", "download-study", "192.0.2.5", "P002"))
        record(conn, AuditEvent("desk", "list-studies", detail="name==HYPERLINK(1)"))
    return made


def rows(html: str) -> list[str]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [row for row in body.split("<tr>")[1:] if "empty" not in row]


def export(client: FlaskClient, url: str) -> list[list[str]]:
    text = client.get(url).get_data(as_text=True)
    return list(csv.reader(io.StringIO(text)))


def test_filters_by_user_patient_action_and_date(office: Office) -> None:
    admin = office.client("admin1")
    today = datetime.now(UTC).date()
    cases = {
        "?user=DOC": 2,
        "?patient_id=P001": 1,
        "?action=download-study": 1,
        f"?user=doc&date_from={today}&date_to={today}": 2,
        f"?user=doc&date_to={today - timedelta(days=1)}": 0,
        f"?user=doc&date_from={today + timedelta(days=1)}": 0,
    }
    for query, expected in cases.items():
        page = admin.get(f"/admin/audit{query}").get_data(as_text=True)
        assert len(rows(page)) == expected, query
    # Looking at the trail is in the trail, with the patient asked about.
    admin.get("/admin/audit?patient_id=P002")
    entry = office.audit(username="admin1")[0]
    assert (entry.event.action, entry.event.patient_id) == ("view-audit", "P002")


def test_the_trail_pages_backwards(office: Office) -> None:
    with closing(open_state(office.app_db)) as conn:
        for number in range(250):
            record(conn, AuditEvent("bulk", "view-instance", detail=str(number)))
    admin = office.client("admin1")
    first = admin.get("/admin/audit?user=bulk").get_data(as_text=True)
    assert len(rows(first)) == 200
    older = first.split('rel="next"', 1)[0].rsplit('href="', 1)[1].split('"')[0]
    second = admin.get(older.replace("&amp;", "&")).get_data(as_text=True)
    assert len(rows(second)) == 50
    assert "« Newest" in second


def test_the_export_is_streamed_csv_with_formulas_defused(office: Office) -> None:
    admin = office.client("admin1")
    response = admin.get("/admin/audit.csv?user=desk")
    assert response.is_streamed
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    table = export(admin, "/admin/audit.csv?user=desk")
    assert table[0][:4] == ["id", "at", "username", "action"]
    assert [row[3] for row in table[1:]] == ["list-studies"]
    assert table[1][8] == "name==HYPERLINK(1)"  # starts with a letter: kept

    with closing(open_state(office.app_db)) as conn:
        record(conn, AuditEvent("desk", "list-studies", detail="=cmd|' /c calc'!A1"))
    table = export(admin, "/admin/audit.csv?user=desk")
    assert table[2][8] == "'=cmd|' /c calc'!A1"
    assert office.actions("admin1")[0] == "export-audit"


def test_the_export_holds_every_row_and_its_hash(office: Office) -> None:
    with closing(open_state(office.app_db)) as conn:
        for number in range(1200):
            record(conn, AuditEvent("bulk", "view-instance", detail=str(number)))
    table = export(office.client("admin1"), "/admin/audit.csv?user=bulk")
    assert len(table) == 1201
    assert [row[8] for row in table[1:]] == [str(n) for n in range(1200)]
    assert all(len(row[9]) == 64 for row in table[1:])
    assert verify_chain(office.app_db).ok


def test_the_address_comes_from_a_trusted_proxy_only(tmp_path: Path) -> None:
    office = make_office(tmp_path, trusted_proxies=("127.0.0.1",))
    forwarded = {"HTTP_X_FORWARDED_FOR": "192.0.2.77"}

    through_proxy = office.client(REMOTE_ADDR="127.0.0.1", **forwarded)
    try_login(through_proxy, "doc")
    assert office.audit(username="doc")[0].event.address == "192.0.2.77"

    # Anybody else's header is ignored: the audit names the real peer.
    direct = office.client(REMOTE_ADDR="192.0.2.99", **forwarded)
    try_login(direct, "desk")
    assert office.audit(username="desk")[0].event.address == "192.0.2.99"


def test_without_trusted_proxies_the_header_is_ignored(tmp_path: Path) -> None:
    office = make_office(tmp_path)
    browser = office.client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.7")
    try_login(browser, "doc")
    assert office.audit(username="doc")[0].event.address == "127.0.0.1"


def test_logins_and_failures_are_audited_with_the_address(tmp_path: Path) -> None:
    office = make_office(tmp_path)
    browser = office.client(REMOTE_ADDR="192.0.2.30")
    try_login(browser, "doc", "not the password")
    office.clock.advance(5)
    try_login(browser, "doc")
    newest, failed = office.audit(username="doc")[:2]
    assert (failed.event.action, failed.event.detail) == (
        "login-failed",
        "wrong password",
    )
    assert (newest.event.action, newest.event.detail) == ("login", "local account")
    assert {failed.event.address, newest.event.address} == {"192.0.2.30"}
