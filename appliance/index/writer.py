"""The index's one writer: a thread that owns the only writing connection.

Every change to ``index.db`` goes through :class:`IndexWriter`. Callers hand it
a job and wait for the result. The thread takes whatever jobs are waiting and
runs them in one ``BEGIN IMMEDIATE`` transaction, each inside its own
savepoint, so that ten associations storing at once pay for one commit (one
WAL fsync) instead of ten, and one failing job does not undo the others.

Readers use their own read-only connections (WAL), and never block this
thread.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

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


class IndexWriter:
    """Run index changes one transaction at a time on a dedicated thread.

    Parameters
    ----------
    path : pathlib.Path
        The ``index.db`` to write; opened (and migrated) by :meth:`start`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._accepting = False
        self._gate = threading.Lock()

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

    def add_instance(self, record: InstanceRecord) -> AddResult:
        """Index one stored instance and wait until it is committed."""
        return self.submit(lambda conn: add_instance(conn, record)).result()

    def _run(self) -> None:
        try:
            conn = open_index(self.path)
        except BaseException as exc:
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._serve(conn)
        finally:
            conn.close()

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            batch, stopping = self._next_batch()
            if batch:
                _run_batch(conn, batch)
            if stopping:
                return

    def _next_batch(self) -> tuple[list[tuple[Job, Future[Any]]], bool]:
        # Block for the first job, then take what else is already waiting.
        batch: list[tuple[Job, Future[Any]]] = []
        item = self._jobs.get()
        while True:
            if item is _STOP:
                return batch, True
            batch.append(item)
            if len(batch) >= MAX_JOBS_PER_TRANSACTION:
                return batch, False
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return batch, False


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
