"""What every request needs: the options, the renderer, and its connections.

Each request opens its own connections on first use, kept on :data:`flask.g`
and closed when the request ends: a read-only one to ``index.db`` (WAL lets
it read while the listener writes; :func:`appliance.index.index_reader` keeps
a rebuild from swapping the file under it) and a read-write one to ``app.db``
for logins and the audit trail.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, current_app, g

from appliance import db
from appliance.auth.login import LoginPolicy
from appliance.index import index_reader
from appliance.restoring import RestoreWizard
from appliance.state.sessions import Timeouts
from appliance.storage import Storage
from appliance.web.render.renderer import Renderer
from backup.job import BackupJob

EXTENSION = "appliance"


@dataclass(frozen=True)
class WebOptions:
    """Where the web finds its data, and its security settings.

    Parameters
    ----------
    index_db, app_db : pathlib.Path
        The index (read only) and the state database.
    storage : Storage
        The stored DICOM files.
    cache_dir : pathlib.Path
        Rendered images and thumbnails; safe to delete at any time.
    secret_file : pathlib.Path
        Holds the key that signs session cookies; made on first start.
    secure_cookies : bool
        Send the session cookie over HTTPS only.
    idle_minutes : int
        Minutes without a request before a new login is needed.
    absolute_minutes : int
        Minutes after a login before a new login is needed, active or not.
    trusted_proxies : tuple of str
        Addresses or networks of reverse proxies whose ``X-Forwarded-For``
        gives the client's address; empty: none is believed.
    login : LoginPolicy
        Lock-out rules and the LDAP directory, if any.
    clock : callable
        Seconds since the epoch; tests pass a clock they move on.
    """

    index_db: Path
    app_db: Path
    storage: Storage
    cache_dir: Path
    secret_file: Path
    secure_cookies: bool = False
    idle_minutes: int = 15
    absolute_minutes: int = 12 * 60
    trusted_proxies: tuple[str, ...] = ()
    login: LoginPolicy = LoginPolicy()
    clock: Callable[[], float] = time.time

    @property
    def timeouts(self) -> Timeouts:
        """The sessions' idle and absolute time-outs, in seconds."""
        return Timeouts(self.idle_minutes * 60, self.absolute_minutes * 60)


@dataclass(frozen=True)
class Runtime:
    """The objects one app shares across requests.

    ``backups`` and ``restore`` are None in an app built without them (some
    tests): the backup pages then say so and refuse every action.
    """

    options: WebOptions
    renderer: Renderer
    backups: BackupJob | None = None
    restore: RestoreWizard | None = None


def install(app: Flask, runtime: Runtime) -> None:
    """Attach `runtime` to `app` and close connections after each request."""
    app.extensions[EXTENSION] = runtime
    app.teardown_appcontext(_close_connections)


def runtime() -> Runtime:
    """Return the current app's runtime."""
    found: Runtime = current_app.extensions[EXTENSION]
    return found


def index_db() -> sqlite3.Connection:
    """Return this request's read-only connection to ``index.db``."""
    if "index_db" not in g:
        stack = ExitStack()
        g.index_db = stack.enter_context(index_reader(runtime().options.index_db))
        g.index_stack = stack
    conn: sqlite3.Connection = g.index_db
    return conn


def state_db() -> sqlite3.Connection:
    """Return this request's connection to ``app.db``."""
    if "state_db" not in g:
        g.state_db = db.connect(runtime().options.app_db)
    conn: sqlite3.Connection = g.state_db
    return conn


def release_index_db() -> None:
    """Close this request's index connection before a long streamed response.

    The connection holds the readers' lock that a rebuild's swap waits for;
    a download that streams for minutes must not hold it.
    """
    g.pop("index_db", None)
    stack = g.pop("index_stack", None)
    if stack is not None:
        stack.close()


def _close_connections(_error: BaseException | None) -> None:
    release_index_db()
    conn = g.pop("state_db", None)
    if conn is not None:
        conn.close()
