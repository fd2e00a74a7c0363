"""The audit log's hash chain: every row seals the one before it.

Each row stores ``prev_hash``, the previous row's ``row_hash``, and
``row_hash = sha256(prev_hash + canonical content)``, where the canonical
content is the row's id and its fields as compact JSON (see
:func:`canonical`). The first row's ``prev_hash`` is :data:`GENESIS`. A
one-row table ``audit_head`` (kept by a trigger) holds the last row's id and
hash, so that deleting the newest rows is seen too.

Triggers (schema migration 7) refuse ``UPDATE`` and ``DELETE`` on ``audit``
and any ``INSERT`` without hashes. :func:`verify_chain` recomputes the whole
chain; ``appliance check`` runs it.

What this does not protect against: someone who can write ``app.db`` can
drop the triggers, edit a row and recompute every hash after it, head
included. The chain makes an edit by hand, a restore of an edited copy or a
stray ``DELETE`` visible; it is not a signature. Keeping older backups of
``app.db`` elsewhere is what shows a rewritten chain.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from appliance import db

GENESIS = "0" * 64
PROBLEM_SAMPLE = 20

# The sealed fields, in this order. Changing the list changes every hash:
# it would need a new, versioned canonical form.
CONTENT_FIELDS = (
    "at",
    "username",
    "action",
    "address",
    "patient_id",
    "study_uid",
    "object_uid",
    "detail",
)


@dataclass
class ChainReport:
    """What :func:`verify_chain` found."""

    rows: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        """True when every row and the head agree with the chain."""
        return self.problem_count == 0

    def add(self, line: str) -> None:
        """Count a problem; keep the first few lines."""
        self.problem_count += 1
        if len(self.problems) < PROBLEM_SAMPLE:
            self.problems.append(line)


def canonical(row_id: int, content: Sequence[str]) -> str:
    """Return the text that a row's hash seals: its id and its fields.

    Parameters
    ----------
    row_id : int
        The row's id.
    content : Sequence[str]
        The values of :data:`CONTENT_FIELDS`, in that order.
    """
    return json.dumps([row_id, *content], ensure_ascii=False, separators=(",", ":"))


def row_hash(prev_hash: str, row_id: int, content: Sequence[str]) -> str:
    """Return ``sha256(prev_hash + canonical content)`` as hex."""
    text = prev_hash + canonical(row_id, content)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def append(conn: sqlite3.Connection, content: Sequence[str]) -> int:
    """Append one row, chained to the last; return its id.

    Runs in its own ``BEGIN IMMEDIATE`` transaction, so that two writers
    never chain to the same row. Inside a caller's transaction it joins
    that one; the caller must then hold the write lock (``BEGIN
    IMMEDIATE``), or its commit may fail with "database is locked".
    """
    if conn.in_transaction:
        return _append(conn, content)
    conn.execute("BEGIN IMMEDIATE")
    try:
        row_id = _append(conn, content)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return row_id


def _append(conn: sqlite3.Connection, content: Sequence[str]) -> int:
    last_id, last_hash = conn.execute(
        "SELECT last_id, last_hash FROM audit_head"
    ).fetchone()
    row_id = max(int(last_id), _max_id(conn)) + 1
    sealed = row_hash(last_hash, row_id, content)
    columns = ", ".join(CONTENT_FIELDS)
    conn.execute(
        f"INSERT INTO audit (id, {columns}, prev_hash, row_hash)"
        f" VALUES (?, {', '.join('?' * len(CONTENT_FIELDS))}, ?, ?)",
        (row_id, *content, last_hash, sealed),
    )
    return row_id


def _max_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()[0])


def seal_unsealed(conn: sqlite3.Connection) -> int:
    """Chain rows written before the chain existed (schema migration 7).

    Cheap when there is nothing to do: only the first row is read. The
    update trigger lets a row without hashes get them once, never again.

    Returns
    -------
    int
        How many rows were sealed.
    """
    first = conn.execute("SELECT row_hash FROM audit ORDER BY id LIMIT 1").fetchone()
    if first is None or first[0] is not None:
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        sealed = _seal_all(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return sealed


def _seal_all(conn: sqlite3.Connection) -> int:
    prev = GENESIS
    sealed = 0
    last_id = 0
    for row in _rows(conn):
        content = [row[name] for name in CONTENT_FIELDS]
        if row["row_hash"] is None:
            new_hash = row_hash(prev, row["id"], content)
            conn.execute(
                "UPDATE audit SET prev_hash = ?, row_hash = ? WHERE id = ?",
                (prev, new_hash, row["id"]),
            )
            sealed += 1
            prev = new_hash
        else:
            prev = row["row_hash"]
        last_id = row["id"]
    conn.execute("UPDATE audit_head SET last_id = ?, last_hash = ?", (last_id, prev))
    return sealed


def verify_chain(app_db: Path) -> ChainReport:
    """Recompute the audit chain of `app_db`, changing nothing.

    Reports a row whose content or hashes were changed, a row missing from
    the middle (the next row no longer points at its predecessor), and rows
    missing from the end (the head names a row that is gone or differs).
    """
    report = ChainReport()
    with closing(db.connect(app_db, readonly=True)) as conn:
        prev = GENESIS
        for row in _rows(conn):
            report.rows += 1
            _verify_row(report, row, prev)
            prev = row["row_hash"] or ""
        head = conn.execute("SELECT last_id, last_hash FROM audit_head").fetchone()
    _verify_head(report, head, prev)
    return report


def _verify_row(report: ChainReport, row: sqlite3.Row, prev: str) -> None:
    row_id = row["id"]
    if row["prev_hash"] != prev:
        report.add(
            f"audit row {row_id}: does not follow the row before it "
            "(a row was deleted or changed)"
        )
    content = [row[name] for name in CONTENT_FIELDS]
    if row["row_hash"] != row_hash(row["prev_hash"] or "", row_id, content):
        report.add(f"audit row {row_id}: its content was changed after it was written")


def _verify_head(report: ChainReport, head: sqlite3.Row | None, last: str) -> None:
    if head is None:
        report.add("audit head: missing (the audit table was tampered with)")
    elif head["last_hash"] != last:
        report.add(
            f"audit head: the last row written was {head['last_id']}, which is "
            "missing or changed (rows were deleted from the end)"
        )


def _rows(conn: sqlite3.Connection) -> Iterator[sqlite3.Row]:
    columns = ", ".join(CONTENT_FIELDS)
    yield from conn.execute(
        f"SELECT id, {columns}, prev_hash, row_hash FROM audit ORDER BY id"
    )
