"""The identity review in the web: who may decide, the pages, the forms, the audit.

Each test has its own small archive, indexed through a running writer with
the identity rules of ``app.db``, and a web app that applies decisions
through that writer, as the service wires them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from appliance import db
from appliance.state.identity import decisions_in_force, history
from appliance.web import create_app
from tests.identity_helpers import Office, office, person
from tests.web.conftest import add_users, csrf_token, login, make_options

JANE = person("DOE^JANE", "P100", "19850214", "F")
JANE_TYPO = person("DOE^JNAE", "P100", "19850214", "F")
JOHN = person("DOE^JOHN", "P100", "19700101", "M")
_CONFLICT = re.compile(r'action="/patients/conflicts/(\d+)/different"')
_TOKENS = re.compile(r'name="(first|second)_token" value="([0-9a-f]+)"')
_RECORD = re.compile(r'href="/patients/(\d+)">Record \d+</a>')


@dataclass
class Desk:
    """An archive with a conflict, and the web app over it."""

    here: Office
    app: Flask

    def client(self, name: str) -> FlaskClient:
        client = self.app.test_client()
        assert login(client, name).status_code == 302  # type: ignore[attr-defined]
        return client

    def audit(self) -> list[tuple[str, str, str, str]]:
        with closing(db.connect(self.here.app_db, readonly=True)) as conn:
            rows = conn.execute(
                "SELECT username, action, patient_id, detail FROM audit"
                " WHERE action LIKE 'identity-%' ORDER BY id"
            ).fetchall()
        return [tuple(row) for row in rows]


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    with office(tmp_path) as here:
        here.send(JOHN, "abdomen")
        here.send(JANE, "obstetric")
        add_users(here.app_db)
        app = create_app(
            lambda: {"ok": True},
            make_options(here.data_dir),
            identity_actions=here.actions,
        )
        yield Desk(here, app)


def _post(client: FlaskClient, page: str, action: str, fields: dict[str, str]) -> str:
    """Post a form of `page` as a browser does; return the page it leads to."""
    token = csrf_token(client.get(page).get_data(as_text=True))
    response = client.post(action, data={**fields, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return client.get(response.headers["Location"]).get_data(as_text=True)


def _review(client: FlaskClient) -> tuple[str, str, dict[str, str]]:
    page = client.get("/patients/review").get_data(as_text=True)
    conflict = _CONFLICT.search(page)
    assert conflict, page
    return page, conflict.group(1), dict(_TOKENS.findall(page))


def test_front_desk_may_not_review_or_decide(desk: Desk) -> None:
    desk_client = desk.client("desk")

    assert desk_client.get("/patients/review").status_code == 403
    assert desk_client.post("/patients/conflicts/1/different").status_code in (
        400,
        403,
    )
    assert "Patients to review" not in desk_client.get("/").get_data(as_text=True)
    for name in ("doc", "admin1"):
        assert desk.client(name).get("/patients/review").status_code == 200


def test_the_review_shows_both_records_side_by_side(desk: Desk) -> None:
    page, _, tokens = _review(desk.client("doc"))

    assert "DOE, JANE" in page and "DOE, JOHN" in page
    assert "1985-02-14" in page and "1970-01-01" in page
    assert page.count('class="differs"') == 6  # name, birth date, sex, twice
    assert "when SEQUOIA sent a study" in page
    assert page.count("/thumbnail") == 2
    assert set(tokens) == {"first", "second"}
    assert desk.audit() == []


def test_different_people_closes_the_conflict_and_is_audited(desk: Desk) -> None:
    client = desk.client("doc")
    _, conflict, tokens = _review(client)

    page = _post(
        client,
        "/patients/review",
        f"/patients/conflicts/{conflict}/different",
        {"first_token": tokens["first"], "second_token": tokens["second"]},
    )

    assert "No patient to review" in page
    assert desk.here.conflicts() == []
    assert desk.audit() == [("doc", "identity-different-people", "P100", "decision 1")]
    with closing(db.connect(desk.here.app_db, readonly=True)) as conn:
        (decision,) = history(conn, {"P100"})
    assert (decision.kind, decision.made_by) == ("different-people", "doc")


def test_a_page_left_open_cannot_act_on_changed_records(desk: Desk) -> None:
    client = desk.client("doc")
    _, conflict, tokens = _review(client)

    page = _post(
        client,
        "/patients/review",
        f"/patients/conflicts/{conflict}/different",
        {"first_token": tokens["first"], "second_token": "0" * 20},
    )

    assert "changed since the page was opened" in page
    assert len(desk.here.conflicts()) == 1
    assert desk.audit() == []


def test_same_person_through_the_merge_form(desk: Desk) -> None:
    desk.here.send(JANE_TYPO, "second-visit")
    client = desk.client("admin1")
    refs = _refs(client, "P100")
    jane, typo = refs["DOE, JANE"], refs["DOE, JNAE"]
    form = f"/patients/merge?first={typo}&second={jane}"

    page = _post(
        client,
        form,
        form,
        {
            **_merge_tokens(client.get(form).get_data(as_text=True)),
            "patient_id": "first",
            "issuer": "first",
            "name": "second",
            "birth_date": "first",
            "sex": "first",
        },
    )

    assert "the two records are one person" in page
    assert [p[2] for p in desk.here.patients()] == ["DOE^JANE", "DOE^JOHN"]
    assert desk.audit() == [("admin1", "identity-same-person", "P100", "decision 1")]


def test_correct_move_and_undo_from_the_patient_page(desk: Desk) -> None:
    client = desk.client("doc")
    jane = _refs(client, "P100")["DOE, JANE"]
    page = client.get(f"/patients/{jane}").get_data(as_text=True)
    token = re.search(r'id="token" name="token" type="hidden" value="([^"]+)"', page)
    assert token

    corrected = _post(
        client,
        f"/patients/{jane}",
        f"/patients/{jane}/correct",
        {
            "token": token.group(1),
            "patient_id": "P100",
            "issuer": "",
            "name": "DOE^JANE^MARIE",
            "birth_date": "1985-02-14",
            "sex": "F",
        },
    )
    assert "DOE, JANE MARIE" in corrected
    jane = _refs(client, "P100")["DOE, JANE MARIE"]
    page = client.get(f"/patients/{jane}").get_data(as_text=True)
    token = re.search(r'id="token" name="token" type="hidden" value="([^"]+)"', page)
    assert token

    moved = _post(
        client,
        f"/patients/{jane}",
        f"/patients/{jane}/move",
        {
            "token": token.group(1),
            "study_uid": desk.here.study_uid("obstetric"),
            "target": "new",
            "patient_id": "P300",
            "name": "ROE^ANNA",
            "birth_date": "19900101",
            "sex": "F",
        },
    )
    assert "ROE, ANNA" in moved
    assert ("P300", "", "ROE^ANNA", "19900101", "F", ("obstetric",)) in (
        desk.here.patients()
    )

    # Undo the move from the new record's history.
    undo = re.search(r'action="(/patients/decisions/(\d+)/undo)"', moved)
    assert undo
    ref = re.search(r"record (\d+)</small>", moved)
    assert ref
    after = _post(client, f"/patients/{ref.group(1)}", undo.group(1), {})
    assert f"Decision {undo.group(2)} is undone" in after
    assert ("P100", "", "DOE^JANE^MARIE", "19850214", "F", ("obstetric",)) in (
        desk.here.patients()
    )
    assert [row[1] for row in desk.audit()] == [
        "identity-correct",
        "identity-new-patient",
        "identity-undo",
    ]
    with closing(db.connect(desk.here.app_db, readonly=True)) as conn:
        assert [d.kind.value for d in decisions_in_force(conn)] == ["correct"]


def test_bad_details_are_refused_with_the_field_named(desk: Desk) -> None:
    client = desk.client("doc")
    jane = _refs(client, "P100")["DOE, JANE"]
    page = client.get(f"/patients/{jane}").get_data(as_text=True)
    token = re.search(r'id="token" name="token" type="hidden" value="([^"]+)"', page)
    assert token

    after = _post(
        client,
        f"/patients/{jane}",
        f"/patients/{jane}/correct",
        {
            "token": token.group(1),
            "patient_id": "P100",
            "name": "DOE^JANE",
            "birth_date": "1985-02-30",
            "sex": "F",
        },
    )

    assert "Not corrected: birth_date" in after
    assert desk.audit() == []


def test_search_by_id_shows_every_patient_that_carries_it(desk: Desk) -> None:
    for name in ("desk", "doc"):
        page = desk.client(name).get("/?patient_id=P100").get_data(as_text=True)
        panel = page.split('id="patients-with-id"', 1)[1].split("</section>", 1)[0]

        assert "2 patient record(s) carry this ID" in panel
        assert "Record A" in panel and "Record B" in panel
        assert "born 1985-02-14" in panel and "born 1970-01-01" in panel
        assert page.count("Record A") == 2 and page.count("Record B") == 2
        assert ("/patients/" in panel) == (name == "doc")


def test_without_a_writer_the_pages_show_but_nothing_is_decided(desk: Desk) -> None:
    app = create_app(lambda: {"ok": True}, make_options(desk.here.data_dir))
    client = app.test_client()
    login(client, "doc")
    page = client.get("/patients/review").get_data(as_text=True)

    assert "DOE, JANE" in page
    assert "Different people</button>" not in page


def test_a_form_without_its_token_is_refused(desk: Desk) -> None:
    client = desk.client("doc")
    _, conflict, tokens = _review(client)

    response = client.post(
        f"/patients/conflicts/{conflict}/different",
        data={"first_token": tokens["first"], "second_token": tokens["second"]},
    )

    assert response.status_code == 400
    assert len(desk.here.conflicts()) == 1


def _refs(client: FlaskClient, patient_id: str) -> dict[str, int]:
    """Record number of each name, from the study list's patients panel."""
    page = client.get(f"/?patient_id={patient_id}").get_data(as_text=True)
    panel = page.split('id="patients-with-id"', 1)[1].split("</section>", 1)[0]
    found = re.findall(r'href="/patients/(\d+)">([^<]+)</a>', panel)
    return {name: int(ref) for ref, name in found}


def _merge_tokens(page: str) -> dict[str, str]:
    found = re.findall(
        r'name="(first_token|second_token)" type="hidden" value="([^"]+)"', page
    )
    return dict(found)
