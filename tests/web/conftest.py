"""Fixtures of the web tests: an office archive, the app, and logged-in users.

The archive is built once per session from pydicom-data files rewritten
under made-up patients (today's study with a cine clip, an image and a
structured report; an older study; a second patient sharing the first one's
ID, which is an identity conflict), plus every rendering test file as is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydicom.uid import generate_uid

from appliance.state import open_state
from appliance.state.users import Role, add_user
from appliance.storage import Storage
from appliance.web import WebOptions, create_app
from tests.web.archive import RENDER_FILES, Patient, data_file, rewrite, store_all

PASSWORD = "correct horse battery"
USERS = {"admin1": Role.ADMIN, "doc": Role.CLINICIAN, "desk": Role.FRONTDESK}
JANE = Patient("DOE^JANE", "P001", "19850214", "F")
JOHN = Patient("DOE^JOHN", "P001", "19700101", "M")
RICHARD = Patient("ROE^RICHARD", "P002", "19601231", "M")

_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@dataclass(frozen=True)
class Archive:
    """A data folder with its studies, by what they are."""

    data_dir: Path
    today: str
    today_study: str
    old_study: str
    conflict_study: str


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """Store and index the office archive once for the whole session."""
    root = tmp_path_factory.mktemp("web-archive")
    work = root / "work"
    today = date.today().strftime("%Y%m%d")
    today_study, old_study, conflict_study = (generate_uid() for _ in range(3))

    files = [
        rewrite(
            data_file(RENDER_FILES["cine"]),
            work / "clip.dcm",
            JANE,
            today_study,
            study_date=today,
            description="Fetal echo",
            accession="ACC100",
        ),
        rewrite(
            data_file(RENDER_FILES["rgb"]),
            work / "image.dcm",
            JANE,
            today_study,
            study_date=today,
            description="Fetal echo",
            accession="ACC100",
        ),
        rewrite(
            data_file("test-SR.dcm"),
            work / "report.dcm",
            JANE,
            today_study,
            study_date=today,
            description="Fetal echo",
            accession="ACC100",
        ),
        rewrite(
            data_file(RENDER_FILES["palette8"]),
            work / "ob.dcm",
            RICHARD,
            old_study,
            study_date="20200115",
            description="OB exam",
            accession="ACC200",
        ),
        rewrite(
            data_file(RENDER_FILES["rgb"]),
            work / "abdomen.dcm",
            JOHN,
            conflict_study,
            study_date="20210301",
            description="Abdomen",
            accession="ACC300",
        ),
    ]
    files += [data_file(name) for name in RENDER_FILES.values()]
    data_dir = root / "data"
    store_all(data_dir, files)
    return Archive(data_dir, today, today_study, old_study, conflict_study)


def make_options(data_dir: Path, **overrides: object) -> WebOptions:
    """Web options for a data folder, as the service builds them."""
    values: dict[str, object] = {
        "index_db": data_dir / "index.db",
        "app_db": data_dir / "app.db",
        "storage": Storage(data_dir),
        "cache_dir": data_dir / "cache",
        "secret_file": data_dir / "web-secret.key",
    }
    values.update(overrides)
    return WebOptions(**values)  # type: ignore[arg-type]


def add_users(app_db: Path) -> None:
    """Create one account of each role, all with :data:`PASSWORD`."""
    with closing(open_state(app_db)) as conn:
        for name, role in USERS.items():
            add_user(conn, name, role, PASSWORD)


@pytest.fixture(scope="session")
def app(archive: Archive) -> Flask:
    """The web app over the archive, with one user of each role."""
    add_users(archive.data_dir / "app.db")
    return create_app(lambda: {"ok": True}, make_options(archive.data_dir))


def csrf_token(html: str) -> str:
    """Return the CSRF token of the first form in a page."""
    match = _CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(client: FlaskClient, name: str, password: str = PASSWORD) -> object:
    """Log in through the form, as a browser does; return the response."""
    page = client.get("/login").get_data(as_text=True)
    return client.post(
        "/login",
        data={"name": name, "password": password, "csrf_token": csrf_token(page)},
    )


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    """A client without a login."""
    with app.test_client() as fresh:
        yield fresh


@pytest.fixture(scope="session")
def role_clients(app: Flask) -> dict[str, FlaskClient]:
    """A logged-in client per user name (shared: only for read-only tests)."""
    clients = {}
    for name in USERS:
        logged_in = app.test_client()
        response = login(logged_in, name)
        assert response.status_code == 302, name  # type: ignore[attr-defined]
        clients[name] = logged_in
    return clients


@pytest.fixture
def doc_client(app: Flask) -> FlaskClient:
    """A clinician freshly logged in, for tests that change the session."""
    fresh = app.test_client()
    login(fresh, "doc")
    return fresh
