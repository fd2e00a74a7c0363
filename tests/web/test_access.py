"""Every route, without a login and with each role: the server enforces roles.

The table below must name every route the app has, so that a new route
cannot be added without deciding (and testing) who may use it.
"""

from __future__ import annotations

from contextlib import closing
from datetime import datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient

from appliance.index import open_index_reader
from appliance.index.browse import StudyQuery, find_studies, get_study, study_series
from appliance.state import add_modality, open_state
from appliance.state.modalities import get_modality
from appliance.state.worklist import NewEntry, add_entry
from appliance.web.access import ROLE_PERMISSIONS, Permission
from tests.web.conftest import USERS, Archive, csrf_token

ACCESS_AE = "ACCESSTEST"
ACCESS_ENTRY = NewEntry(
    patient_id="ACCESS-WL",
    patient_name="ACCESS^TEST",
    accession_number="ACCESS-WL",
    scheduled=datetime.now(),
)

PUBLIC = {"auth.login", "healthz", "static"}
NEEDS = {
    "auth.logout": Permission.OWN_ACCOUNT,
    "auth.password": Permission.OWN_ACCOUNT,
    "studies.index": Permission.LIST_STUDIES,
    "studies.study": Permission.VIEW_IMAGES,
    "viewer.info": Permission.VIEW_IMAGES,
    "viewer.frame": Permission.VIEW_IMAGES,
    "viewer.values": Permission.VIEW_IMAGES,
    "viewer.thumbnail": Permission.VIEW_IMAGES,
    "viewer.report": Permission.VIEW_IMAGES,
    "downloads.image": Permission.DOWNLOAD,
    "downloads.study": Permission.DOWNLOAD,
    "admin.audit_trail": Permission.ADMINISTER,
    "admin.audit_export": Permission.ADMINISTER,
    "admin.users.index": Permission.ADMINISTER,
    "admin.users.add": Permission.ADMINISTER,
    "admin.users.role": Permission.ADMINISTER,
    "admin.users.disable": Permission.ADMINISTER,
    "admin.users.enable": Permission.ADMINISTER,
    "admin.users.reset_password": Permission.ADMINISTER,
    "admin.users.unlock": Permission.ADMINISTER,
    "admin.sessions.index": Permission.ADMINISTER,
    "admin.sessions.end": Permission.ADMINISTER,
    "admin.sessions.end_user": Permission.ADMINISTER,
    "admin.modalities.index": Permission.ADMINISTER,
    "admin.modalities.add": Permission.ADMINISTER,
    "admin.modalities.edit": Permission.ADMINISTER,
    "admin.modalities.remove": Permission.ADMINISTER,
    "admin.backup.index": Permission.ADMINISTER,
    "admin.backup.now": Permission.ADMINISTER,
    "admin.backup.restore.index": Permission.ADMINISTER,
    "admin.backup.restore.verify": Permission.ADMINISTER,
    "admin.backup.restore.progress": Permission.ADMINISTER,
    "admin.backup.restore.confirm": Permission.ADMINISTER,
    "identity.review": Permission.REVIEW_IDENTITY,
    "identity.patient": Permission.REVIEW_IDENTITY,
    "identity.merge": Permission.REVIEW_IDENTITY,
    "identity.different": Permission.REVIEW_IDENTITY,
    "identity.correct": Permission.REVIEW_IDENTITY,
    "identity.move": Permission.REVIEW_IDENTITY,
    "identity.undo": Permission.REVIEW_IDENTITY,
    "worklist.index": Permission.SCHEDULE,
    "worklist.add": Permission.SCHEDULE,
    "worklist.entry": Permission.SCHEDULE,
    "worklist.confirm_remove": Permission.SCHEDULE,
    "worklist.remove": Permission.SCHEDULE,
}
# Routes that only take a POST, each with a URL that names nothing, so that
# the test changes nothing: the admin gets past the gate to a 404.
POSTS = {
    "admin.users.role": "/admin/users/999999/role",
    "admin.users.disable": "/admin/users/999999/disable",
    "admin.users.enable": "/admin/users/999999/enable",
    "admin.users.reset_password": "/admin/users/999999/reset-password",
    "admin.users.unlock": "/admin/users/999999/unlock",
    "admin.sessions.end": "/admin/sessions/999999/end",
    "admin.sessions.end_user": "/admin/sessions/user/999999/end",
    "admin.modalities.remove": "/admin/modalities/remove",
    "admin.backup.now": "/admin/backup/now",
    "admin.backup.restore.verify": "/admin/backup/restore/verify",
    "admin.backup.restore.confirm": "/admin/backup/restore/confirm",
    "identity.different": "/patients/conflicts/999999/different",
    "identity.correct": "/patients/999999/correct",
    "identity.move": "/patients/999999/move",
    "identity.undo": "/patients/decisions/999999/undo",
    "worklist.remove": "/worklist/999999/remove",
}
GETS = sorted(set(NEEDS) - {"auth.logout"} - set(POSTS))


@pytest.fixture(scope="module")
def urls(archive: Archive) -> dict[str, str]:
    """A working URL for every protected endpoint that answers a GET."""
    with closing(open_state(archive.data_dir / "app.db")) as conn:
        if get_modality(conn, ACCESS_AE) is None:
            add_modality(conn, ACCESS_AE, description="for the access tests")
        scheduled = add_entry(conn, ACCESS_ENTRY)
    with closing(open_index_reader(archive.data_dir / "index.db")) as conn:
        study = get_study(conn, archive.today_study)
        assert study is not None
        entries = [i for s in study_series(conn, study.id) for i in s.instances]
        clip = next(e for e in entries if e.number_of_frames > 1)
        report = next(e for e in entries if e.rows is None)
        mr = find_studies(conn, StudyQuery(modality="MR")).rows[0]
        gray = study_series(conn, mr.id)[0].instances[0]
        conflict = get_study(conn, archive.conflict_study)
        assert conflict is not None
    return {
        "auth.password": "/account/password",
        "studies.index": "/",
        "studies.study": f"/studies/{archive.today_study}",
        "viewer.info": f"/instances/{clip.id}/info",
        "viewer.frame": f"/instances/{clip.id}/frames/2",
        "viewer.values": f"/instances/{gray.id}/frames/1/values",
        "viewer.thumbnail": f"/instances/{clip.id}/thumbnail",
        "viewer.report": f"/instances/{report.id}/report",
        "downloads.image": f"/instances/{clip.id}/download/png",
        "downloads.study": f"/studies/{archive.old_study}/download",
        "admin.audit_trail": "/admin/audit",
        "admin.audit_export": "/admin/audit.csv?user=nobody-at-all",
        "admin.users.index": "/admin/users/",
        "admin.users.add": "/admin/users/new",
        "admin.sessions.index": "/admin/sessions/",
        "admin.modalities.index": "/admin/modalities/",
        "admin.modalities.add": "/admin/modalities/new",
        "admin.modalities.edit": f"/admin/modalities/edit?ae_title={ACCESS_AE}",
        "admin.backup.index": "/admin/backup/",
        "admin.backup.restore.index": "/admin/backup/restore/",
        "admin.backup.restore.progress": "/admin/backup/restore/progress",
        "identity.review": "/patients/review",
        "identity.patient": f"/patients/{study.patient_ref}",
        "identity.merge": (
            f"/patients/merge?first={study.patient_ref}&second={conflict.patient_ref}"
        ),
        "worklist.index": "/worklist/",
        "worklist.add": "/worklist/new",
        "worklist.entry": f"/worklist/{scheduled.id}",
        "worklist.confirm_remove": f"/worklist/{scheduled.id}/remove",
    }


def test_every_route_is_in_the_table(app: Flask) -> None:
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints == PUBLIC | set(NEEDS)


def test_every_view_declares_its_permission(app: Flask) -> None:
    for endpoint, needed in NEEDS.items():
        assert app.view_functions[endpoint].permission is needed  # type: ignore[attr-defined]


def test_every_post_only_route_is_in_the_post_table(app: Flask) -> None:
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC or "GET" in (rule.methods or ()):
            continue
        assert rule.endpoint in set(POSTS) | {"auth.logout"}, rule.endpoint


@pytest.mark.parametrize("endpoint", GETS)
def test_without_login_every_page_leads_to_the_login(
    client: FlaskClient, urls: dict[str, str], endpoint: str
) -> None:
    response = client.get(urls[endpoint])
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_logout_without_login_leads_to_the_login(client: FlaskClient) -> None:
    response = client.post("/logout")
    assert response.status_code in (302, 400)


def test_public_pages_need_no_login(client: FlaskClient) -> None:
    assert client.get("/login").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/static/viewer.js").status_code == 200


@pytest.mark.parametrize("endpoint", sorted(POSTS))
def test_without_login_every_action_leads_to_the_login(
    client: FlaskClient, endpoint: str
) -> None:
    token = csrf_token(client.get("/login").get_data(as_text=True))
    response = client.post(POSTS[endpoint], data=_form(endpoint, token))
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("user", sorted(USERS))
@pytest.mark.parametrize("endpoint", sorted(POSTS))
def test_each_role_may_post_exactly_its_actions(
    role_clients: dict[str, FlaskClient], user: str, endpoint: str
) -> None:
    client = role_clients[user]
    token = csrf_token(client.get("/").get_data(as_text=True))
    response = client.post(POSTS[endpoint], data=_form(endpoint, token))
    allowed = NEEDS[endpoint] in ROLE_PERMISSIONS[USERS[user]]
    assert response.status_code == (404 if allowed else 403), response.data[:300]


def _form(endpoint: str, token: str) -> dict[str, str]:
    # What the page's form would send, naming nothing that exists.
    fields = {"csrf_token": token}
    if endpoint == "admin.users.role":
        fields["role"] = "clinician"
    if endpoint == "admin.modalities.remove":
        fields["ae_title"] = "NO-SUCH-AE"
    return fields


@pytest.mark.parametrize("user", sorted(USERS))
@pytest.mark.parametrize("endpoint", GETS)
def test_each_role_gets_exactly_its_routes(
    role_clients: dict[str, FlaskClient],
    urls: dict[str, str],
    user: str,
    endpoint: str,
) -> None:
    response = role_clients[user].get(urls[endpoint])
    allowed = NEEDS[endpoint] in ROLE_PERMISSIONS[USERS[user]]
    assert response.status_code == (200 if allowed else 403), response.data[:300]
    if not allowed:
        assert b"Not allowed" in response.data


def test_frontdesk_sees_the_list_without_links_to_images(
    role_clients: dict[str, FlaskClient], archive: Archive
) -> None:
    page = role_clients["desk"].get("/").get_data(as_text=True)
    assert "DOE, JANE" in page
    assert f"/studies/{archive.today_study}" not in page


def test_unknown_page_is_a_friendly_404(role_clients: dict[str, FlaskClient]) -> None:
    response = role_clients["doc"].get("/no/such/page?name=DOE")
    assert response.status_code == 404
    assert b"Not found" in response.data
    assert b"DOE" not in response.data and b"/no/such" not in response.data


def test_unknown_instance_and_frame_are_404(
    role_clients: dict[str, FlaskClient], urls: dict[str, str]
) -> None:
    doc = role_clients["doc"]
    assert doc.get("/instances/999999/info").status_code == 404
    assert doc.get(urls["viewer.frame"].replace("/2", "/121")).status_code == 404
    assert doc.get("/studies/1.2.3.4/download").status_code == 404
