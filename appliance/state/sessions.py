"""Web sessions kept in ``app.db``, so that an admin can list and end them.

The browser's cookie holds a random session token; the table keeps only its
SHA-256, so that a copy of ``app.db`` (a backup, say) opens no session. A
row holds the user, when the session started and was last used, and the
browser's address and user agent. Ending a session deletes its row; the
next request with that cookie is sent to the login page.

Times are seconds since the epoch, from the caller's clock, so that tests
can move time on without sleeping.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass

# A request refreshes "last seen" at most this often: viewing a clip makes
# a hundred requests a minute, which need not be a hundred writes.
TOUCH_SECONDS = 30
USER_AGENT_LENGTH = 200


@dataclass(frozen=True)
class WebSession:
    """One logged-in browser."""

    id: int
    user_id: int
    username: str
    created_at: float
    last_seen_at: float
    address: str
    user_agent: str


@dataclass(frozen=True)
class Timeouts:
    """How long a session lives: idle and in total, in seconds."""

    idle: float
    absolute: float

    def expired(self, session: WebSession, now: float) -> bool:
        """Tell whether `session` has timed out at `now`."""
        return (
            now - session.last_seen_at > self.idle
            or now - session.created_at > self.absolute
        )


def start_session(
    conn: sqlite3.Connection,
    user_id: int,
    now: float,
    address: str = "",
    user_agent: str = "",
) -> tuple[int, str]:
    """Record a new session for `user_id`.

    Returns
    -------
    tuple of (int, str)
        The session's row id, and its token for the cookie.
    """
    token = secrets.token_urlsafe(32)
    cursor = conn.execute(
        "INSERT INTO sessions (token_hash, user_ref, created_at, last_seen_at,"
        " address, user_agent) VALUES (?, ?, ?, ?, ?, ?)",
        (_digest(token), user_id, now, now, address, user_agent[:USER_AGENT_LENGTH]),
    )
    return int(cursor.lastrowid or 0), token


def find_session(conn: sqlite3.Connection, token: str) -> WebSession | None:
    """Return the session whose cookie holds `token`, or None."""
    row = conn.execute(
        f"{_SELECT} WHERE s.token_hash = ?", (_digest(token),)
    ).fetchone()
    return _session(row) if row is not None else None


def touch_session(conn: sqlite3.Connection, session: WebSession, now: float) -> None:
    """Note that `session` was used at `now` (at most every few seconds)."""
    if now - session.last_seen_at < TOUCH_SECONDS:
        return
    conn.execute("UPDATE sessions SET last_seen_at = ? WHERE id = ?", (now, session.id))


def list_sessions(conn: sqlite3.Connection) -> list[WebSession]:
    """Return every recorded session, by user name and then newest first."""
    rows = conn.execute(f"{_SELECT} ORDER BY u.name, s.created_at DESC").fetchall()
    return [_session(row) for row in rows]


def get_session(conn: sqlite3.Connection, session_id: int) -> WebSession | None:
    """Return the session with this row id, or None."""
    row = conn.execute(f"{_SELECT} WHERE s.id = ?", (session_id,)).fetchone()
    return _session(row) if row is not None else None


def end_session(conn: sqlite3.Connection, session_id: int) -> bool:
    """End one session; return whether it existed."""
    cursor = conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
    return cursor.rowcount > 0


def end_user_sessions(
    conn: sqlite3.Connection, user_id: int, keep: int | None = None
) -> int:
    """End every session of a user, but the one with id `keep`; return how many."""
    cursor = conn.execute(
        "DELETE FROM sessions WHERE user_ref = ? AND id IS NOT ?", (user_id, keep)
    )
    return cursor.rowcount


def end_expired(conn: sqlite3.Connection, timeouts: Timeouts, now: float) -> int:
    """Delete sessions that have timed out; return how many."""
    cursor = conn.execute(
        "DELETE FROM sessions WHERE last_seen_at < ? OR created_at < ?",
        (now - timeouts.idle, now - timeouts.absolute),
    )
    return cursor.rowcount


_SELECT = (
    "SELECT s.id, s.user_ref, u.name, s.created_at, s.last_seen_at, s.address,"
    " s.user_agent FROM sessions AS s JOIN users AS u ON u.id = s.user_ref"
)


def _session(row: sqlite3.Row) -> WebSession:
    return WebSession(
        id=int(row["id"]),
        user_id=int(row["user_ref"]),
        username=row["name"],
        created_at=float(row["created_at"]),
        last_seen_at=float(row["last_seen_at"]),
        address=row["address"],
        user_agent=row["user_agent"],
    )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
