"""An office of its own for tests that change accounts, sessions and locks.

Each :func:`make_office` builds a data folder with an empty index and the
three users of :mod:`tests.web.conftest`, and a web app whose clock the test
moves on (:class:`FakeClock`), so that time-outs and lock-outs are tested
without sleeping and without touching the shared archive's ``app.db``.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from appliance.index import open_index
from appliance.state import open_state
from appliance.state.audit import AuditEntry, recent
from appliance.web import create_app
from tests.web.conftest import PASSWORD, add_users, csrf_token, login, make_options

START = 1_800_000_000.0


class FakeClock:
    """Seconds since the epoch, moved on by the test."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass."""
        self.now += seconds


@dataclass
class Office:
    """A data folder, its web app and the app's clock."""

    data_dir: Path
    app: Flask
    clock: FakeClock

    @property
    def app_db(self) -> Path:
        """The office's state database."""
        return self.data_dir / "app.db"

    def client(self, name: str | None = None, **environ: Any) -> FlaskClient:
        """A browser, logged in as `name` when given."""
        browser = self.app.test_client()
        if environ:
            browser.environ_base.update(environ)
        if name is not None:
            response = login(browser, name)
            assert response.status_code == 302, response.get_data(as_text=True)  # type: ignore[attr-defined]
        return browser

    def audit(self, limit: int = 50, username: str | None = None) -> list[AuditEntry]:
        """The newest audit entries first."""
        with closing(open_state(self.app_db)) as conn:
            return recent(conn, limit, username)

    def actions(self, username: str | None = None) -> list[str]:
        """The newest audit actions first."""
        return [entry.event.action for entry in self.audit(username=username)]


def make_office(root: Path, **options: Any) -> Office:
    """Build an office in `root` (web options may be overridden)."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    with closing(open_index(data_dir / "index.db")):
        pass
    add_users(data_dir / "app.db")
    clock = options.pop("clock", FakeClock())
    app = create_app(
        lambda: {"ok": True}, make_options(data_dir, clock=clock, **options)
    )
    return Office(data_dir, app, clock)


def post(
    client: FlaskClient, url: str, data: dict[str, str] | None = None, **kw: Any
) -> Any:
    """POST a form with the CSRF token of the browser's session."""
    token = csrf_token(client.get("/account/password").get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, **(data or {})}, **kw)


def try_login(client: FlaskClient, name: str, password: str = PASSWORD) -> Any:
    """Log in through the form; return the response."""
    return login(client, name, password)
