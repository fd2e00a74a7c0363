"""Admin: registering, editing and removing modalities from the web."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pytest

from appliance.state import add_modality, list_modalities, open_state
from appliance.state.modalities import Modality, get_modality, update_modality
from tests.web.office import Office, make_office, post


@pytest.fixture
def office(tmp_path: Path) -> Office:
    return make_office(tmp_path)


def registered(office: Office) -> list[Modality]:
    with closing(open_state(office.app_db)) as conn:
        return list_modalities(conn)


def test_add_edit_and_remove(office: Office) -> None:
    admin = office.client("admin1")
    form = {
        "ae_title": "SEQUOIA",
        "host": "192.0.2.50",
        "port": "104",
        "default_issuer": "CLINIC-A",
        "description": "Room 1",
    }
    assert post(admin, "/admin/modalities/new", form).status_code == 302
    assert registered(office) == [
        Modality("SEQUOIA", "192.0.2.50", 104, "CLINIC-A", "Room 1")
    ]
    page = admin.get("/admin/modalities/").get_data(as_text=True)
    assert "SEQUOIA" in page and "192.0.2.50" in page

    edit = admin.get("/admin/modalities/edit?ae_title=SEQUOIA").get_data(as_text=True)
    assert 'value="CLINIC-A"' in edit
    changed = {**form, "ae_title": "SEQUOIA2", "host": "", "port": ""}
    response = post(admin, "/admin/modalities/edit?ae_title=SEQUOIA", changed)
    assert response.status_code == 302
    assert registered(office) == [
        Modality("SEQUOIA2", None, None, "CLINIC-A", "Room 1")
    ]

    assert (
        post(admin, "/admin/modalities/remove", {"ae_title": "SEQUOIA2"}).status_code
        == 302
    )
    assert registered(office) == []
    assert office.actions("admin1")[:3] == [
        "modality-removed",
        "modality-changed",
        "modality-added",
    ]
    assert office.audit(username="admin1")[1].event.detail == (
        "SEQUOIA host=192.0.2.50 port=104 issuer=CLINIC-A"
        " -> SEQUOIA2 host=any port=- issuer=CLINIC-A"
    )


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"ae_title": "BAD\\TITLE"}, "no backslash"),
        ({"ae_title": "TAKEN"}, "already registered"),
    ],
)
def test_bad_registrations_are_refused(
    office: Office, form: dict[str, str], message: str
) -> None:
    with closing(open_state(office.app_db)) as conn:
        add_modality(conn, "TAKEN")
    response = post(office.client("admin1"), "/admin/modalities/new", form)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


def test_a_port_out_of_range_is_refused_by_the_form(office: Office) -> None:
    form = {"ae_title": "ECHO1", "port": "70000"}
    response = post(office.client("admin1"), "/admin/modalities/new", form)
    assert response.status_code == 200 and registered(office) == []


def test_unknown_modalities_are_404(office: Office) -> None:
    admin = office.client("admin1")
    assert admin.get("/admin/modalities/edit?ae_title=NOPE").status_code == 404
    assert (
        post(admin, "/admin/modalities/remove", {"ae_title": "NOPE"}).status_code == 404
    )


def test_update_modality_checks_its_input(tmp_path: Path) -> None:
    with closing(open_state(tmp_path / "app.db")) as conn:
        add_modality(conn, "ONE")
        add_modality(conn, "TWO")
        with pytest.raises(ValueError, match="already registered"):
            update_modality(conn, "ONE", Modality("TWO", None, None, "", ""))
        with pytest.raises(ValueError, match="not registered"):
            update_modality(conn, "NONE", Modality("X", None, None, "", ""))
        with pytest.raises(ValueError, match="port"):
            update_modality(conn, "ONE", Modality("ONE", None, 0, "", ""))
        update_modality(conn, "ONE", Modality("ONE", "host", 11112, "I", "d"))
        assert get_modality(conn, "ONE") == Modality("ONE", "host", 11112, "I", "d")
