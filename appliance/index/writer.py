"""The index's one writer: a thread that owns the only writing connection.

Every change to ``index.db`` goes through :class:`IndexWriter`. Callers hand it
a job and wait for the result. The thread takes whatever jobs are waiting and
runs them in one ``BEGIN IMMEDIATE`` transaction, each inside its own
savepoint, so that ten associations storing at once pay for one commit (one
WAL fsync) instead of ten, and one failing job does not undo the others.

Readers use their own read-only connections (WAL), and never block this
thread. A rebuild swaps the database file through :meth:`IndexWriter.replace_database`,
between two transactions, so no job ever runs against a file being replaced.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from appliance.index.identity_rules import IdentityRules
from appliance.index.ingest import AddResult, add_instance
from appliance.index.records import InstanceRecord
from appliance.index.schema import open_index

logger = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

MAX_JOBS_PER_TRANSACTION = 64
_STOP = object()


class WriterStoppedError(RuntimeError):
    """A job was submitted after the writer stopped."""


@dataclass(frozen=True)
class _Replacement:
    """A request to swap the database file; see ``replace_database``."""

    prepare: Job
    replace: Callable[[], None]
    future: Future[Any]


class IndexWriter:
    """Run index changes one transaction at a time on a dedicated thread.

    Parameters
    ----------
    path : pathlib.Path
        The ``index.db`` to write; opened (and migrated) by :meth:`start`.
    identity : callable, optional
        Returns the identity rules (default issuers, worklist, decisions)
        that each instance is indexed with; asked on the writer's thread
        for every instance. None indexes files exactly as they say.
    """

    def __init__(
        self, path: Path, identity: Callable[[], IdentityRules] | None = None
    ) -> None:
        self.path = path
        self._identity = identity
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._accepting = False
        self._gate = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def start(self) -> None:
        """Open the database on the writer thread and start serving jobs.

        Raises
        ------
        Exception
            Whatever opening the database raised (e.g. SchemaTooNewError).
        """
        self._thread = threading.Thread(
            target=self._run, name="index-writer", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._open_error is not None:
            raise self._open_error
        self._accepting = True

    def stop(self) -> None:
        """Finish the jobs already queued, then close the database."""
        with self._gate:
            self._accepting = False
        if self._thread is None:
            return
        self._jobs.put(_STOP)
        self._thread.join()
        self._thread = None

    def submit(self, job: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Queue a job; it runs inside a transaction on the writer thread.

        Raises
        ------
        WriterStoppedError
            If the writer is not running.
        """
        future: Future[T] = Future()
        with self._gate:
            if not self._accepting:
                raise WriterStoppedError("the index writer is not running")
            self._jobs.put((job, future))
        return future

    def replace_database(
        self, prepare: Callable[[sqlite3.Connection], T], replace: Callable[[], None]
    ) -> Future[T]:
        """Swap the database file on the writer thread, between transactions.

        Parameters
        ----------
        prepare : callable
            Runs first, with the writer's connection and outside any
            transaction; its result becomes the future's. If it raises,
            nothing is swapped.
        replace : callable
            Runs with the writer's connection closed, to put a new file in
            place; the writer then reopens the database. Jobs queued
            meanwhile wait, and run on the new file.

        Raises
        ------
        WriterStoppedError
            If the writer is not running.
        """
        future: Future[T] = Future()
        with self._gate:
            if not self._accepting:
                raise WriterStoppedError("the index writer is not running")
            self._jobs.put(_Replacement(prepare, replace, future))
        return future

    def add_instance(self, record: InstanceRecord) -> AddResult:
        """Index one stored instance and wait until it is committed."""
        return self.submit_instance(record).result()

    def submit_instance(self, record: InstanceRecord) -> Future[AddResult]:
        """Queue one stored instance to be indexed with the identity rules."""
        return self.submit(
            lambda conn: add_instance(conn, record, self.identity_rules())
        )

    def identity_rules(self) -> IdentityRules | None:
        """Return the identity rules in force now (None: files as they say)."""
        return None if self._identity is None else self._identity()

    def _run(self) -> None:
        try:
            self._conn = open_index(self.path)
        except BaseException as exc:
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._serve()
        finally:
            if self._conn is not None:
                self._conn.close()

    def _serve(self) -> None:
        while True:
            batch, control = self._next_batch()
            conn = self._conn
            if batch and conn is None:
                error = WriterStoppedError("the index could not be reopened")
                _fail_batch(batch, error)
            elif batch and conn is not None:
                _run_batch(conn, batch)
            if control is _STOP:
                return
            if isinstance(control, _Replacement):
                self._replace(control)

    def _next_batch(self) -> tuple[list[tuple[Job, Future[Any]]], object]:
        # Block for the first job, then take what else is already waiting; a
        # stop or a replacement ends the batch and is returned beside it.
        batch: list[tuple[Job, Future[Any]]] = []
        item = self._jobs.get()
        while True:
            if item is _STOP or isinstance(item, _Replacement):
                return batch, item
            batch.append(item)
            if len(batch) >= MAX_JOBS_PER_TRANSACTION:
                return batch, None
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return batch, None

    def _replace(self, replacement: _Replacement) -> None:
        if self._conn is None:
            replacement.future.set_exception(WriterStoppedError("no open index"))
            return
        try:
            value = replacement.prepare(self._conn)
        except BaseException as exc:
            replacement.future.set_exception(exc)
            return

        self._conn.close()
        try:
            replacement.replace()
        except BaseException as exc:
            logger.exception("Could not replace the index; keeping the old one")
            replacement.future.set_exception(exc)
        else:
            replacement.future.set_result(value)
        finally:
            self._reopen()

    def _reopen(self) -> None:
        # A writer that cannot reopen fails its jobs (stores answer 0xA700 and
        # keep their files for the next start's reconcile) instead of dying.
        try:
            self._conn = open_index(self.path)
        except Exception:
            logger.exception("Could not reopen the index; index writes now fail")
            self._conn = None


def _fail_batch(batch: list[tuple[Job, Future[Any]]], error: BaseException) -> None:
    for _, future in batch:
        future.set_exception(error)


def _run_batch(conn: sqlite3.Connection, batch: list[tuple[Job, Future[Any]]]) -> None:
    """Run jobs in one transaction; each job's failure is its own."""
    results: list[tuple[Future[Any], Any, BaseException | None]] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for job, future in batch:
            results.append((future, *_run_savepointed(conn, job)))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        logger.exception("Index transaction of %d job(s) failed", len(batch))
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        for _, future in batch:
            future.set_exception(exc)
        return

    for future, value, error in results:
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


def _run_savepointed(
    conn: sqlite3.Connection, job: Job
) -> tuple[Any, BaseException | None]:
    conn.execute("SAVEPOINT job")
    try:
        value = job(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        return None, exc
    conn.execute("RELEASE job")
    return value, None
