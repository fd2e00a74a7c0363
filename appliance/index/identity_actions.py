"""Making identity decisions take effect on the live index, through its writer.

The web never writes ``index.db``. It records a decision in ``app.db``, then
asks :class:`IdentityActions` to apply it: a job on the index writer's one
thread, in its transaction, between stores.

A new decision is applied on top of the index as it is
(:func:`~appliance.index.decisions.apply_identity_decisions`). An undo
cannot be applied that way: a merged record no longer says which instance
came from which side. So the part of the index the undone decision touched
is derived again, as a rebuild would derive it: every patient record
sharing an ID with it (and every record linked to those by a study or by
another decision) is dropped, its instances are indexed again from their
stored headers, and the decisions still in force are applied on top.

Not done yet: the headers are read on the writer's thread, so stores wait
while an undo runs (about a millisecond per instance of the records
concerned; a few hundred instances take well under a second).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from datetime import datetime

from appliance.index.decisions import apply_identity_decisions
from appliance.index.identity_rules import IdentityDecision, IdentityRules
from appliance.index.ingest import add_instance
from appliance.index.records import InstanceRecord, read_header, record_from_header
from appliance.index.writer import IndexWriter
from appliance.storage import Storage

logger = logging.getLogger(__name__)

RulesSource = Callable[[], IdentityRules]
RecordReader = Callable[[sqlite3.Row], tuple[int, InstanceRecord]]

JOB_TIMEOUT_SECONDS = 300.0
MAX_CLUSTER_ROUNDS = 20


class IdentityActions:
    """Apply identity decisions to the live index, one at a time.

    Parameters
    ----------
    writer : IndexWriter
        The running writer of the live index.
    storage : Storage
        The stored files, read again for an undo.
    rules : callable
        Returns the identity rules in force now (from ``app.db``), including
        a decision just recorded.
    """

    def __init__(
        self, writer: IndexWriter, storage: Storage, rules: RulesSource
    ) -> None:
        self._writer = writer
        self._storage = storage
        self._rules = rules
        self.lock = threading.Lock()
        """Held by the web while it records and applies one decision, so that
        decisions reach the index in the order ``app.db`` numbers them."""

    def apply(self, decision: IdentityDecision) -> int:
        """Apply a decision just recorded; return how many were applied.

        Raises
        ------
        appliance.index.WriterStoppedError
            If the writer is not running.
        Exception
            Whatever the job raised; the index is then unchanged.
        """
        prior = [d for d in self._rules().decisions if d.id < decision.id]
        future = self._writer.submit(
            lambda conn: apply_identity_decisions(conn, [decision], prior=prior)
        )
        applied = future.result(timeout=JOB_TIMEOUT_SECONDS)
        logger.info("Applied identity decision %d (%s)", decision.id, decision.kind)
        return applied

    def undo(self, undone: IdentityDecision) -> int:
        """Derive again what an undone decision touched; return instances re-indexed.

        Raises
        ------
        appliance.index.WriterStoppedError
            If the writer is not running.
        Exception
            Whatever the job raised (a stored file that cannot be read, for
            one); the index is then unchanged.
        """
        rules = self._rules()
        seed = undone.patient_ids()
        future = self._writer.submit(
            lambda conn: rederive(conn, seed, rules, self._read)
        )
        count = future.result(timeout=JOB_TIMEOUT_SECONDS)
        logger.info(
            "Undid identity decision %d (%s): %d instance(s) indexed again",
            undone.id,
            undone.kind,
            count,
        )
        return count

    def _read(self, row: sqlite3.Row) -> tuple[int, InstanceRecord]:
        path = self._storage.absolute(row["file_path"])
        record = record_from_header(
            read_header(path),
            file_path=row["file_path"],
            file_size=row["file_size"],
            sha256=row["sha256"],
            received_at=datetime.fromisoformat(row["received_at"]),
            source_ae=row["source_ae"],
        )
        return path.stat().st_mtime_ns, record


def rederive(
    conn: sqlite3.Connection,
    patient_ids: Iterable[str],
    rules: IdentityRules,
    read: RecordReader,
) -> int:
    """Index again the records of some PatientIDs, then apply the decisions.

    Parameters
    ----------
    conn : sqlite3.Connection
        The writer's connection, inside its transaction.
    patient_ids : iterable of str
        Where to start; records linked to these by a study or a decision
        are included.
    rules : IdentityRules
        Issuers, worklist and the decisions in force.
    read : callable
        Reads an instance row's stored header: (mtime in ns, record).

    Returns
    -------
    int
        How many instances were indexed again.
    """
    cache: dict[int, tuple[int, InstanceRecord]] = {}

    def cached(row: sqlite3.Row) -> tuple[int, InstanceRecord]:
        if row["id"] not in cache:
            cache[row["id"]] = read(row)
        return cache[row["id"]]

    ids, rows = _cluster(conn, set(patient_ids), rules, cached)
    # In order of arrival, as a rebuild adds them.
    records = sorted(
        (cached(row) for row in rows), key=lambda item: (item[0], item[1].file_path)
    )
    _drop(conn, ids, rows)

    ingest = rules.without_decisions()
    for _mtime, record in records:
        add_instance(conn, record, ingest)
    apply_identity_decisions(conn, rules.decisions, scope=ids)
    return len(records)


def _cluster(
    conn: sqlite3.Connection,
    ids: set[str],
    rules: IdentityRules,
    read: RecordReader,
) -> tuple[set[str], list[sqlite3.Row]]:
    """Grow a set of PatientIDs until nothing outside it is linked to it."""
    rows: list[sqlite3.Row] = []
    for _round in range(MAX_CLUSTER_ROUNDS):
        rows = _instances_of(conn, ids)
        studies = {row["study_uid"] for row in rows}
        linked = {row["owner_id"] for row in rows} | {row["patient_id"] for row in rows}
        for decision in rules.decisions:
            if decision.patient_ids() & ids or decision.study_uid in studies:
                linked |= decision.patient_ids()
        for row in rows:
            linked |= _named_ids(read(row)[1], rules)
        if linked <= ids:
            return ids, rows
        ids |= linked
    raise RuntimeError("the records to derive again keep growing; rebuild instead")


def _instances_of(conn: sqlite3.Connection, ids: set[str]) -> list[sqlite3.Row]:
    """Every instance of every study that holds a record with one of `ids`."""
    marks = ",".join("?" * len(ids))
    return conn.execute(
        "WITH wanted AS (SELECT id FROM patients"
        f" WHERE patient_id IN ({marks})),"
        " touched AS (SELECT id FROM studies WHERE patient_ref IN wanted"
        "  UNION SELECT se.study_ref FROM instances i"
        "  JOIN series se ON se.id = i.series_ref WHERE i.patient_ref IN wanted)"
        " SELECT i.*, s.study_uid, p.patient_id, o.patient_id AS owner_id"
        " FROM instances i JOIN series se ON se.id = i.series_ref"
        " JOIN studies s ON s.id = se.study_ref"
        " JOIN patients p ON p.id = i.patient_ref"
        " JOIN patients o ON o.id = s.patient_ref"
        " WHERE s.id IN touched ORDER BY i.id",
        sorted(ids),
    ).fetchall()


def _named_ids(record: InstanceRecord, rules: IdentityRules) -> set[str]:
    named = {rules.as_sent(record).patient_id}
    scheduled = rules.scheduled(record)
    if scheduled is not None:
        named.add(scheduled.patient_id)
    return named


def _drop(conn: sqlite3.Connection, ids: set[str], rows: list[sqlite3.Row]) -> None:
    """Delete the records of `ids` with their studies, series and instances."""
    marks = ",".join("?" * len(ids))
    patients = [
        int(row[0])
        for row in conn.execute(
            f"SELECT id FROM patients WHERE patient_id IN ({marks})", sorted(ids)
        )
    ]
    series = sorted({int(row["series_ref"]) for row in rows})
    studies = sorted(
        {
            int(row[0])
            for ref in series
            for row in conn.execute("SELECT study_ref FROM series WHERE id = ?", (ref,))
        }
    )
    for patient in patients:
        conn.execute(
            "DELETE FROM identity_conflicts WHERE patient_a = ? OR patient_b = ?",
            (patient, patient),
        )
    conn.executemany("DELETE FROM instances WHERE id = ?", [(r["id"],) for r in rows])
    conn.executemany("DELETE FROM series WHERE id = ?", [(ref,) for ref in series])
    conn.executemany("DELETE FROM studies WHERE id = ?", [(ref,) for ref in studies])
    conn.executemany("DELETE FROM patients WHERE id = ?", [(ref,) for ref in patients])
