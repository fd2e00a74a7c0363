"""The worklist pages: who may schedule, the form, the list, removal, audit.

The app and its ``app.db`` are shared by the whole session, so every entry
made here has its own patient ID and accession number.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import date, timedelta
from itertools import count

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from appliance.state import open_state
from appliance.state.mpps import create_step
from appliance.state.worklist import Status, WorklistEntry, list_entries, set_status
from tests.web.conftest import USERS, Archive, csrf_token, login

_serial = count(1)


def unique(prefix: str) -> str:
    """A patient ID or accession number no other test uses (at most 16 chars)."""
    return f"{prefix}-{next(_serial):04d}"


@pytest.fixture
def desk(app: Flask) -> Iterator[FlaskClient]:
    """A front-desk user, freshly logged in."""
    with app.test_client() as client:
        assert login(client, "desk").status_code == 302  # type: ignore[attr-defined]
        yield client


def typed(**changes: str) -> dict[str, str]:
    """What the front desk types for one patient, with `changes`."""
    values = {
        "family_name": "Webtest",
        "given_name": "Anna",
        "patient_id": unique("WEBPID"),
        "issuer": "CLINIC-A",
        "birth_date": "1985-02-14",
        "sex": "F",
        "accession_number": unique("WEBACC"),
        "scheduled_date": date.today().isoformat(),
        "scheduled_time": "09:30",
        "description": "Obstetric ultrasound",
        "station_ae": "SEQUOIA",
        "modality": "US",
    }
    return {**values, **changes}


def send_form(client: FlaskClient, fields: dict[str, str]) -> TestResponse:
    """Open the new-entry form and send it with its CSRF token."""
    token = csrf_token(client.get("/worklist/new").get_data(as_text=True))
    return client.post("/worklist/new", data={**fields, "csrf_token": token})


def stored(archive: Archive, accession: str) -> WorklistEntry | None:
    """The entry with this accession number, if any."""
    with closing(open_state(archive.data_dir / "app.db")) as conn:
        entries = list_entries(conn, include_done=True)
    return next((e for e in entries if e.accession_number == accession), None)


def audit_rows(archive: Archive, patient_id: str) -> list[tuple[str, str, str]]:
    """(user, action, detail) of every audit row naming `patient_id`, oldest first."""
    with closing(sqlite3.connect(archive.data_dir / "app.db")) as conn:
        rows = conn.execute(
            "SELECT username, action, detail FROM audit WHERE patient_id = ?"
            " ORDER BY id",
            (patient_id,),
        ).fetchall()
    return [tuple(row) for row in rows]


# Who may use the pages.


@pytest.mark.parametrize("user", sorted(USERS))
def test_every_role_may_see_the_list_and_the_form(
    role_clients: dict[str, FlaskClient], user: str
) -> None:
    client = role_clients[user]

    listing = client.get("/worklist/")
    form = client.get("/worklist/new")

    assert listing.status_code == 200 and b"New entry" in listing.data
    assert form.status_code == 200 and b'name="family_name"' in form.data
    assert b'href="/worklist/"' in client.get("/").data


def test_without_login_the_pages_lead_to_the_login(client: FlaskClient) -> None:
    for url in ("/worklist/", "/worklist/new", "/worklist/1", "/worklist/1/remove"):
        response = client.get(url)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")


# Scheduling.


def test_a_new_entry_is_stored_listed_and_audited(
    desk: FlaskClient, archive: Archive
) -> None:
    fields = typed()

    response = send_form(desk, fields)

    assert response.status_code == 302
    assert response.headers["Location"] == "/worklist/?when=today"
    entry = stored(archive, fields["accession_number"])
    assert entry is not None
    assert entry.patient_name == "Webtest^Anna"
    assert (entry.patient_id, entry.issuer) == (fields["patient_id"], "CLINIC-A")
    assert (entry.birth_date, entry.sex) == ("19850214", "F")
    assert (entry.scheduled_date, entry.scheduled_time) == (
        date.today().strftime("%Y%m%d"),
        "093000",
    )
    assert (entry.station_ae, entry.modality) == ("SEQUOIA", "US")
    assert (entry.status, entry.created_by) == (Status.SCHEDULED, "desk")

    page = desk.get("/worklist/?when=today").get_data(as_text=True)
    assert "Scheduled Webtest, Anna" in page
    assert "Webtest, Anna" in page and fields["accession_number"] in page
    assert f"/worklist/{entry.id}" in page

    (added,) = audit_rows(archive, entry.patient_id)
    assert added[:2] == ("desk", "worklist-add")
    assert f"entry {entry.id} accession {fields['accession_number']}" in added[2]


def test_the_form_offers_now_and_us(desk: FlaskClient) -> None:
    page = desk.get("/worklist/new").get_data(as_text=True)

    inputs = {
        match.group(1): match.group(0)
        for match in re.finditer(r'<input [^>]*id="(\w+)"[^>]*>', page)
    }
    assert f'type="date" value="{date.today().isoformat()}"' in inputs["scheduled_date"]
    assert re.search(r'type="time" value="\d\d:\d\d"', inputs["scheduled_time"])
    assert 'value="US"' in inputs["modality"]
    assert 'type="date"' in inputs["birth_date"]
    assert re.search(r'<select [^>]*name="sex"', page)


def test_a_name_without_given_name_is_the_family_name_alone(
    desk: FlaskClient, archive: Archive
) -> None:
    fields = typed(given_name="")

    assert send_form(desk, fields).status_code == 302

    entry = stored(archive, fields["accession_number"])
    assert entry is not None and entry.patient_name == "Webtest"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"birth_date": (date.today() + timedelta(days=1)).isoformat()}, "future"),
        ({"birth_date": "14.02.1985"}, "Not a valid date"),
        ({"accession_number": "A" * 17}, "longer than 16"),
        ({"family_name": "Back\\slash"}, "Name: No backslash"),
        ({"given_name": "Anna^Maria"}, "without ^ or ="),
        ({"patient_id": ""}, "This field is required"),
        ({"sex": "X"}, "Not a valid choice"),
        ({"station_ae": "BAD\\AE"}, "An AE title"),
        ({"description": "pelvic\\abdomen"}, "Procedure description: No backslash"),
        ({"scheduled_time": "25:00"}, "Not a valid time"),
    ],
)
def test_bad_input_shows_the_form_again_with_a_reason(
    desk: FlaskClient, archive: Archive, changes: dict[str, str], message: str
) -> None:
    fields = typed(**changes)

    response = send_form(desk, fields)

    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert message in page
    assert 'class="field-error"' in page
    # Nothing typed is lost.
    assert f'value="{fields["patient_id"]}"' in page or not fields["patient_id"]
    assert 'value="Obstetric ultrasound"' in page or "description" in changes
    assert stored(archive, fields["accession_number"]) is None


def test_an_accession_number_is_scheduled_once(
    desk: FlaskClient, archive: Archive
) -> None:
    first = typed()
    assert send_form(desk, first).status_code == 302

    again = typed(accession_number=first["accession_number"])
    response = send_form(desk, again)

    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Accession number: " in page and "is already scheduled" in page
    assert f'value="{again["patient_id"]}"' in page
    entry = stored(archive, first["accession_number"])
    assert entry is not None and entry.patient_id == first["patient_id"]


def test_an_empty_accession_number_is_numbered_for_the_front_desk(
    desk: FlaskClient, archive: Archive
) -> None:
    fields = typed(accession_number="")

    response = send_form(desk, fields)

    assert response.status_code == 302
    with closing(open_state(archive.data_dir / "app.db")) as conn:
        entries = list_entries(conn, include_done=True)
    [entry] = [e for e in entries if e.patient_id == fields["patient_id"]]
    assert re.fullmatch(r"\d{8}-\d{3}", entry.accession_number)
    assert entry.accession_number.startswith(date.today().strftime("%Y%m%d"))


def test_the_form_needs_its_csrf_token(desk: FlaskClient, archive: Archive) -> None:
    fields = typed()

    response = desk.post("/worklist/new", data=fields)

    assert response.status_code == 400
    assert stored(archive, fields["accession_number"]) is None


# The list's filters.


def test_the_list_shows_today_upcoming_and_done_on_request(
    desk: FlaskClient, archive: Archive
) -> None:
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    last_week = (date.today() - timedelta(days=7)).isoformat()
    today_entry, later, old, done = (
        typed(),
        typed(scheduled_date=tomorrow),
        typed(scheduled_date=last_week),
        typed(),
    )
    for fields in (today_entry, later, old, done):
        assert send_form(desk, fields).status_code == 302
    finished = stored(archive, done["accession_number"])
    assert finished is not None
    with closing(open_state(archive.data_dir / "app.db")) as conn:
        set_status(conn, [finished.id], Status.COMPLETED)

    def shown(query: str) -> set[str]:
        page = desk.get(f"/worklist/{query}").get_data(as_text=True)
        return {
            fields["accession_number"]
            for fields in (today_entry, later, old, done)
            if fields["accession_number"] in page
        }

    assert shown("") == {today_entry["accession_number"]}
    assert shown("?when=upcoming") == {
        today_entry["accession_number"],
        later["accession_number"],
    }
    assert shown("?when=all") == {
        today_entry["accession_number"],
        later["accession_number"],
        old["accession_number"],
    }
    assert shown("?when=today&done=1") == {
        today_entry["accession_number"],
        done["accession_number"],
    }
    assert shown("?when=nonsense") == shown("")


def test_a_past_entry_leads_to_the_list_of_all_dates(desk: FlaskClient) -> None:
    last_week = (date.today() - timedelta(days=7)).isoformat()

    response = send_form(desk, typed(scheduled_date=last_week))

    assert response.headers["Location"] == "/worklist/?when=all"


# One entry, its performed steps, and removing it.


def test_an_entry_shows_what_the_modality_reported(
    desk: FlaskClient, archive: Archive
) -> None:
    fields = typed()
    assert send_form(desk, fields).status_code == 302
    entry = stored(archive, fields["accession_number"])
    assert entry is not None
    attributes = {
        "00400244": {"vr": "DA", "Value": ["20260105"]},
        "00400245": {"vr": "TM", "Value": ["101500"]},
    }
    with closing(open_state(archive.data_dir / "app.db")) as conn:
        create_step(
            conn,
            "1.2.826.0.1.3680043.99.1",
            "SEQUOIA",
            json.dumps(attributes),
            [entry.id],
        )

    page = desk.get(f"/worklist/{entry.id}").get_data(as_text=True)

    assert "Webtest, Anna" in page and entry.sps_id in page
    assert "1.2.826.0.1.3680043.99.1" in page and "2026-01-05 10:15" in page
    assert "in progress" in page
    assert audit_rows(archive, entry.patient_id)[-1][1] == "view-worklist-entry"


def test_an_entry_without_steps_says_so(desk: FlaskClient, archive: Archive) -> None:
    fields = typed()
    assert send_form(desk, fields).status_code == 302
    entry = stored(archive, fields["accession_number"])
    assert entry is not None

    page = desk.get(f"/worklist/{entry.id}").get_data(as_text=True)

    assert "has reported nothing" in page
    assert desk.get("/worklist/999999").status_code == 404


def test_removing_asks_first_then_removes_and_audits(
    desk: FlaskClient, archive: Archive
) -> None:
    fields = typed()
    assert send_form(desk, fields).status_code == 302
    entry = stored(archive, fields["accession_number"])
    assert entry is not None

    confirm = desk.get(f"/worklist/{entry.id}/remove").get_data(as_text=True)
    assert "Remove this entry from the worklist?" in confirm
    assert stored(archive, fields["accession_number"]) is not None

    response = desk.post(
        f"/worklist/{entry.id}/remove", data={"csrf_token": csrf_token(confirm)}
    )

    assert response.status_code == 302
    assert response.headers["Location"] == "/worklist/"
    assert stored(archive, fields["accession_number"]) is None
    user, action, detail = audit_rows(archive, entry.patient_id)[-1]
    assert (user, action) == ("desk", "worklist-remove")
    assert f"entry {entry.id}" in detail and "was SCHEDULED" in detail
    listing = desk.get("/worklist/").get_data(as_text=True)
    assert "Removed Webtest, Anna from the worklist." in listing
    again = desk.post(
        f"/worklist/{entry.id}/remove", data={"csrf_token": csrf_token(confirm)}
    )
    assert again.status_code == 404


def test_removing_needs_the_csrf_token(desk: FlaskClient, archive: Archive) -> None:
    fields = typed()
    assert send_form(desk, fields).status_code == 302
    entry = stored(archive, fields["accession_number"])
    assert entry is not None

    response = desk.post(f"/worklist/{entry.id}/remove")

    assert response.status_code == 400
    assert stored(archive, fields["accession_number"]) is not None


def test_no_patient_data_in_the_log(
    desk: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    fields = typed(family_name="Secretname", birth_date="1971-03-04")

    with caplog.at_level(logging.DEBUG):
        assert send_form(desk, fields).status_code == 302
        send_form(desk, typed(patient_id=fields["patient_id"], birth_date="2999-01-01"))

    assert "scheduled by desk" in caplog.text
    for secret in ("Secretname", fields["patient_id"], "19710304", "1971-03-04"):
        assert secret not in caplog.text
