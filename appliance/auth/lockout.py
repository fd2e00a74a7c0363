"""Back-off and temporary lock-out after failed logins.

Failures are counted per key: one for the account name (``account:anna``,
whether or not such an account exists, so that the answer tells nothing)
and one for the browser's address (``address:192.168.1.31``). After the
n-th failure of a key the next attempt must wait ``base_delay * 2**(n-1)``
seconds (at most :data:`MAX_DELAY`); an attempt during the wait is refused
without looking at the password. When the failures reach the rule's
maximum, the key is locked for ``lock_seconds``, and then starts afresh. A
failure older than ``lock_seconds`` is forgotten, and a good login clears
its account's count (not its address's: one's own account must not reset
the count of an address that guesses at others).

Counts live in ``app.db`` (table ``login_failures``), so that a restart
does not reset them. ``appliance user unlock NAME`` and the admin's users
page clear an account's lock.

A known gap: attempts that arrive at the same moment are all checked before
any of them is counted, so a burst of parallel requests gets a few guesses
more than the rule says; the address's own lock bounds it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

MAX_DELAY = 60.0
ACCOUNT = "account:"
ADDRESS = "address:"


@dataclass(frozen=True)
class LockoutRule:
    """How many failures a key may have, and what they cost.

    Parameters
    ----------
    max_failures : int
        Failures in a row that lock the key.
    lock_seconds : float
        How long a lock lasts; also how long a failure is remembered.
    base_delay : float
        The wait after the first failure, doubled after each further one;
        0 turns the back-off off.
    """

    max_failures: int
    lock_seconds: float
    base_delay: float = 1.0


@dataclass(frozen=True)
class Lock:
    """A key that must wait before its next attempt."""

    key: str
    until: float
    locked: bool

    @property
    def name(self) -> str:
        """The account name or address, without the key's kind."""
        return self.key.partition(":")[2]


def account_key(name: str) -> str:
    """Return the key that counts failures of the account `name`."""
    return ACCOUNT + name.strip().lower()


def address_key(address: str) -> str:
    """Return the key that counts failures from `address`."""
    return ADDRESS + address


def wait_seconds(
    conn: sqlite3.Connection, key: str, rule: LockoutRule, now: float
) -> float:
    """Return how long `key` must wait before its next attempt (0: go on)."""
    lock = current_lock(conn, key, rule, now)
    return 0.0 if lock is None else lock.until - now


def current_lock(
    conn: sqlite3.Connection, key: str, rule: LockoutRule, now: float
) -> Lock | None:
    """Return the lock or back-off `key` is under at `now`, or None."""
    row = conn.execute("SELECT * FROM login_failures WHERE key = ?", (key,)).fetchone()
    if row is None:
        return None
    if row["locked_until"] > now:
        return Lock(key, float(row["locked_until"]), locked=True)
    if not row["failures"] or now - row["last_failure_at"] > rule.lock_seconds:
        return None
    delay = min(rule.base_delay * 2 ** (row["failures"] - 1), MAX_DELAY)
    until = float(row["last_failure_at"]) + delay
    return Lock(key, until, locked=False) if until > now else None


def record_failure(
    conn: sqlite3.Connection, key: str, rule: LockoutRule, now: float
) -> bool:
    """Count a failed login of `key`; return True when it locks the key."""
    row = conn.execute(
        "SELECT failures, last_failure_at FROM login_failures WHERE key = ?", (key,)
    ).fetchone()
    failures = 0
    if row is not None and now - row["last_failure_at"] <= rule.lock_seconds:
        failures = int(row["failures"])
    failures += 1

    locks = failures >= rule.max_failures
    conn.execute(
        "INSERT INTO login_failures (key, failures, last_failure_at, locked_until)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
        " failures = excluded.failures, last_failure_at = excluded.last_failure_at,"
        " locked_until = max(locked_until, excluded.locked_until)",
        (key, 0 if locks else failures, now, now + rule.lock_seconds if locks else 0),
    )
    return locks


def clear(conn: sqlite3.Connection, key: str) -> bool:
    """Forget the failures and lock of `key`; return whether it had any."""
    cursor = conn.execute("DELETE FROM login_failures WHERE key = ?", (key,))
    return cursor.rowcount > 0


def locked_keys(conn: sqlite3.Connection, now: float) -> list[Lock]:
    """Return every key locked out at `now` (not those merely backing off)."""
    rows = conn.execute(
        "SELECT key, locked_until FROM login_failures WHERE locked_until > ?"
        " ORDER BY key",
        (now,),
    ).fetchall()
    return [Lock(row["key"], float(row["locked_until"]), locked=True) for row in rows]


def forget_old(conn: sqlite3.Connection, now: float, older_than: float) -> int:
    """Delete records untouched for `older_than` seconds; return how many."""
    cursor = conn.execute(
        "DELETE FROM login_failures WHERE last_failure_at < ? AND locked_until < ?",
        (now - older_than, now),
    )
    return cursor.rowcount
