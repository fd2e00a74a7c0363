"""Rebuilding ``index.db`` from ``storage/`` while the appliance keeps receiving.

A rebuild never touches the index in use until it is complete:

1. It notes the highest instance row of the live index, then walks
   ``storage/`` and queues every file by arrival time (flat memory: see
   :class:`~appliance.index.crawl.ArrivalQueue`).
2. It reads each file's header and adds it to ``index.db.rebuilding`` with
   the same :func:`~appliance.index.ingest.add_instance` the listener uses,
   oldest first, so every patient, study and series comes out as ingest made
   it, with the modalities' default issuers and the worklist link (the
   sender's AE title is in each stored file's path) but no decision yet.
   Unreadable files are reported (log, status, a report file) and left
   where they are.
3. On the index writer's thread, between transactions, it catches up: live
   rows added after step 1 whose file is not in the new index are added from
   their files. Identity decisions from ``app.db`` are read there and then
   (so none made during the rebuild is missed) and applied. Then the
   writer closes its connection, the new file replaces ``index.db`` and the
   writer reopens it. Stores that arrive meanwhile wait in the writer's
   queue and land in the new index, so nothing received during a rebuild is
   lost.

Readers are held off during step 3 (see :mod:`appliance.index.readers`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from appliance.index import queries
from appliance.index.crawl import (
    ArrivalQueue,
    ForeignFile,
    read_record,
    stored_file,
    walk_in_path_order,
)
from appliance.index.decisions import IdentityDecision, apply_identity_decisions
from appliance.index.identity_rules import NO_RULES, IdentityRules
from appliance.index.ingest import Outcome, add_instance
from appliance.index.readahead import read_in_order
from appliance.index.readers import index_reader, readers_held_off
from appliance.index.records import UnreadableInstanceError
from appliance.index.schema import open_index
from appliance.index.status import RebuildState, RebuildStatus, RebuildSummary
from appliance.index.writer import IndexWriter
from appliance.storage import Storage

logger = logging.getLogger(__name__)

NEW_SUFFIX = ".rebuilding"
COMMIT_EVERY = 1000
BUILD_CACHE_KIB = 32 * 1024
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")

DecisionSource = Callable[[], Sequence[IdentityDecision]]
RulesSource = Callable[[], IdentityRules]


class RebuildCancelledError(RuntimeError):
    """The rebuild was told to stop; the index in use is unchanged."""


@dataclass(frozen=True)
class RebuildFiles:
    """Where a rebuild works: the live index, and its scratch and report."""

    index: Path
    work_dir: Path

    @property
    def new_index(self) -> Path:
        """The index being built, next to the live one (same file system)."""
        return self.index.with_name(self.index.name + NEW_SUFFIX)

    @property
    def scratch(self) -> Path:
        """The arrival-order queue of files."""
        return self.work_dir / "rebuild-queue.db"

    @property
    def report(self) -> Path:
        """Unreadable files of the last rebuild: one ``path<TAB>reason`` a line."""
        return self.work_dir / "rebuild-unreadable.txt"


class Rebuilder:
    """Build a new index from storage and swap it in through the writer.

    Parameters
    ----------
    storage : Storage
        Whose files are the truth.
    files : RebuildFiles
        The live index and where to work.
    writer : IndexWriter
        The running writer of the live index.
    status : RebuildStatus
        Updated as the rebuild goes.
    decisions : callable
        Returns the identity decisions to apply (from ``app.db``).
    cancel : threading.Event, optional
        Set it to stop the rebuild; the index in use is then unchanged.
    rules : callable, optional
        Returns the default issuers and the worklist (from ``app.db``) that
        files are indexed with; their decisions are not used here. None
        indexes files exactly as they say.
    """

    def __init__(
        self,
        storage: Storage,
        files: RebuildFiles,
        writer: IndexWriter,
        status: RebuildStatus,
        decisions: DecisionSource,
        cancel: threading.Event | None = None,
        rules: RulesSource | None = None,
    ) -> None:
        self.storage = storage
        self.files = files
        self.writer = writer
        self.status = status
        self.decisions = decisions
        self.cancel = cancel or threading.Event()
        self.rules = rules
        self._ingest_rules = NO_RULES

    def run(self, reason: str, request_id: str = "") -> RebuildSummary | None:
        """Rebuild now; return the summary, or None if it failed or stopped.

        Failures are logged and recorded in :attr:`status`; the index in use
        is then unchanged and keeps serving.
        """
        self.status.begin(reason, request_id, self.files.report)
        logger.warning("Rebuilding the index from storage (%s)", reason)
        try:
            summary = self._rebuild()
        except RebuildCancelledError:
            logger.warning("Index rebuild stopped before it was complete")
            self.status.end(RebuildState.CANCELLED, error="stopped")
            return None
        except Exception as exc:
            logger.exception("Index rebuild failed; the index in use is unchanged")
            self.status.end(RebuildState.FAILED, error=str(exc))
            return None
        finally:
            _remove_database(self.files.new_index)

        logger.warning(
            "Index rebuilt: %d instances, %d studies, %d patients from %d files"
            " in %.0f s; %d unreadable file(s) left in place",
            summary.instances,
            summary.studies,
            summary.patients,
            summary.files,
            summary.seconds,
            summary.unreadable,
        )
        self.status.end(RebuildState.DONE, summary=summary)
        return summary

    def _rebuild(self) -> RebuildSummary:
        high_water = _live_high_water(self.files.index)
        self.files.work_dir.mkdir(parents=True, exist_ok=True)
        _remove_database(self.files.new_index)
        conn = _open_new_index(self.files.new_index)
        try:
            self._build(conn)
            return self._swap(conn, high_water)
        finally:
            conn.close()  # already closed after a swap; closing again is harmless

    def _build(self, conn: sqlite3.Connection) -> None:
        if self.rules is not None:
            self._ingest_rules = self.rules().without_decisions()
        queue = ArrivalQueue(self.storage, self.files.scratch)
        try:
            with self.files.report.open("w", encoding="utf-8") as report:
                self._scan(queue, report)
                self._index_all(conn, queue, report)
        finally:
            queue.close()

    def _swap(self, conn: sqlite3.Connection, high_water: int) -> RebuildSummary:
        # Catch up, apply decisions and swap: on the writer's thread, with
        # readers held off, while stores wait in the writer's queue.
        self.status.set_state(RebuildState.SWAPPING)
        with readers_held_off(self.files.index):
            future = self.writer.replace_database(
                lambda live: self._finish(live, conn, high_water),
                lambda: install_index(self.files.new_index, self.files.index),
            )
            return future.result()

    def _scan(self, queue: ArrivalQueue, report: TextIO) -> None:
        self.status.set_state(RebuildState.SCANNING)
        for file in walk_in_path_order(self.storage):
            self._check_cancel()
            if isinstance(file, ForeignFile):
                self._unreadable(report, file.relative, "not named as a stored file")
            else:
                queue.add(file)
            self.status.progress.advance()
        self.status.progress.restart(total=queue.count)

    def _index_all(
        self, conn: sqlite3.Connection, queue: ArrivalQueue, report: TextIO
    ) -> None:
        self.status.set_state(RebuildState.INDEXING)
        conn.execute("BEGIN IMMEDIATE")
        read = read_in_order(queue, queue.count)
        for count, (file, record) in enumerate(read, start=1):
            self._check_cancel()
            if isinstance(record, str):
                self._unreadable(report, file.relative, record)
            else:
                added = add_instance(conn, record, self._ingest_rules)
                if added.outcome is Outcome.IDENTICAL:
                    self.status.count_redundant()
                    logger.info(
                        "%s duplicates %s; left in place, not indexed",
                        file.relative,
                        added.existing_path,
                    )
            self.status.progress.advance()
            if count % COMMIT_EVERY == 0:
                conn.execute("COMMIT")
                conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")

    def _finish(
        self, live: sqlite3.Connection, conn: sqlite3.Connection, high_water: int
    ) -> RebuildSummary:
        # Read on the writer's thread: a decision recorded before this point
        # is applied here; one recorded after it reaches the new index
        # through the writer's queue.
        decisions = self.decisions()
        conn.execute("BEGIN IMMEDIATE")
        caught_up = _catch_up(live, conn, high_water, self.storage, self._ingest_rules)
        apply_identity_decisions(conn, decisions)
        conn.execute("COMMIT")
        summary = self.status.summarise(queries.counts(conn))
        _close_durably(conn, self.files.new_index)
        if caught_up:
            logger.info("Added %d instance(s) received during the rebuild", caught_up)
        return summary

    def _unreadable(self, report: TextIO, relative: str, reason: str) -> None:
        logger.warning("Unreadable file left in place: %s: %s", relative, reason)
        report.write(f"{relative}\t{reason}\n")
        self.status.count_unreadable(relative)

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise RebuildCancelledError("the rebuild was stopped")


def install_index(new_path: Path, index_path: Path) -> None:
    """Put a finished, closed index file in place of ``index.db``.

    Call only with every connection to both files closed. The old file's
    ``-wal`` and ``-shm`` go first: left beside the new file, SQLite would
    replay the old log into it.
    """
    for suffix in SQLITE_SIDE_FILES:
        Path(f"{index_path}{suffix}").unlink(missing_ok=True)
        Path(f"{new_path}{suffix}").unlink(missing_ok=True)
    os.replace(new_path, index_path)
    _fsync_directory(index_path.parent)


def _live_high_water(index_path: Path) -> int:
    """Return the highest instance row of the live index (0 if unreadable)."""
    try:
        with index_reader(index_path) as conn:
            row = conn.execute("SELECT max(id) FROM instances").fetchone()
    except sqlite3.Error:
        logger.warning("Could not read the live index; catching up on all of it")
        return 0
    return int(row[0] or 0)


def _open_new_index(path: Path) -> sqlite3.Connection:
    # Nothing in this file counts until it is closed, fsynced and renamed, so
    # it is written without per-commit fsyncs and with a larger cache.
    conn = open_index(path)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute(f"PRAGMA cache_size = -{BUILD_CACHE_KIB}")
    return conn


def _catch_up(
    live: sqlite3.Connection,
    conn: sqlite3.Connection,
    high_water: int,
    storage: Storage,
    rules: IdentityRules = NO_RULES,
) -> int:
    """Add live rows newer than `high_water` that the new index lacks."""
    added = 0
    rows = live.execute(
        "SELECT file_path FROM instances WHERE id > ? ORDER BY id", (high_water,)
    )
    for (file_path,) in rows:
        known = conn.execute(
            "SELECT 1 FROM instances WHERE file_path = ?", (file_path,)
        ).fetchone()
        if known:
            continue
        file = stored_file(storage, file_path)
        if file is None:
            logger.warning("Indexed file missing from storage: %s", file_path)
            continue
        try:
            add_instance(conn, read_record(file), rules)
        except UnreadableInstanceError as exc:
            logger.warning("Unreadable file left in place: %s: %s", file_path, exc)
            continue
        added += 1
    return added


def _close_durably(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_database(path: Path) -> None:
    path.unlink(missing_ok=True)
    for suffix in SQLITE_SIDE_FILES:
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
