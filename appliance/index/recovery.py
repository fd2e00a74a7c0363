"""Starting on a damaged or stale index: diagnose, move aside, reconcile.

At start, before the writer opens ``index.db``, :func:`diagnose_index` says
whether it can be used as it is. One that cannot (missing, unreadable,
failing ``PRAGMA quick_check``, from a newer version, or without a schema)
is moved aside by :func:`move_aside`, kept and named with the time, and the
appliance rebuilds in the background while it serves on a fresh one.

An index that can be used may still be behind the files: a crash between a
file's rename into ``storage/`` and its index commit, or a lost ``-wal``.
:func:`reconcile` indexes every stored file the index lacks, oldest first,
and reports rows whose file is missing without dropping them.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from appliance.index import schema
from appliance.index.compare import Pair, compare
from appliance.index.crawl import ArrivalQueue, ForeignFile, StoredFile, read_record
from appliance.index.ingest import AddResult, Outcome
from appliance.index.records import UnreadableInstanceError
from appliance.index.writer import IndexWriter
from appliance.storage import Storage

logger = logging.getLogger(__name__)

SIDE_FILES = ("-wal", "-shm")
MAX_IN_FLIGHT = 256


def diagnose_index(path: Path) -> str | None:
    """Return why ``index.db`` cannot be used as it is, or None if it can.

    Parameters
    ----------
    path : pathlib.Path
        The index file. It is opened read-write (which replays its ``-wal``,
        as the writer would) but never changed otherwise.

    Returns
    -------
    str or None
        A reason in plain words, e.g. ``"fails PRAGMA quick_check: ..."``.
    """
    if not path.exists():
        return "it is missing"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
    except sqlite3.Error as exc:
        return f"it cannot be opened: {exc}"
    try:
        return _diagnose_open(conn)
    except sqlite3.Error as exc:
        return f"it cannot be read: {exc}"
    finally:
        conn.close()


def move_aside(path: Path) -> Path:
    """Rename ``index.db`` (and its ``-wal``, ``-shm``) to a dated name.

    Returns
    -------
    pathlib.Path
        The new name, e.g. ``index.db.damaged-20250102T030405``; its side
        files keep their suffixes, so SQLite can still open the set.
    """
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    number = 1
    while target.exists():
        number += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{number}")

    for suffix in ("", *SIDE_FILES):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, f"{target}{suffix}")
    _fsync_directory(path.parent)
    return target


def storage_has_files(storage: Storage) -> bool:
    """Tell whether ``storage/`` holds at least one file (stops at the first)."""
    for _root, _folders, files in os.walk(storage.files_dir):
        if files:
            return True
    return False


@dataclass
class ReconcileResult:
    """What a reconcile found and did."""

    files: int = 0
    indexed: int = 0
    redundant: int = 0
    unreadable: int = 0
    foreign: int = 0
    missing: int = 0


def reconcile(
    storage: Storage,
    index_path: Path,
    writer: IndexWriter,
    scratch: Path,
    cancel: threading.Event | None = None,
) -> ReconcileResult:
    """Index stored files the index lacks; report rows whose file is gone.

    Parameters
    ----------
    storage : Storage
        The data folder's storage.
    index_path : pathlib.Path
        The live ``index.db``, read a page at a time.
    writer : IndexWriter
        The running writer; it adds what is missing.
    scratch : pathlib.Path
        A scratch file for the files to add, sorted by arrival.
    cancel : threading.Event, optional
        Set it to stop early; what was added stays, the rest waits for the
        next start.

    Returns
    -------
    ReconcileResult
    """
    result = ReconcileResult()
    queue = ArrivalQueue(storage, scratch)
    try:
        for item in compare(storage, index_path):
            if cancel is not None and cancel.is_set():
                return result
            _sort_out(item, storage, queue, result)
        _add_all(queue, writer, result, cancel)
    finally:
        queue.close()
    _log_result(result)
    return result


def _diagnose_open(conn: sqlite3.Connection) -> str | None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    known = schema.MIGRATIONS[-1].version
    if version > known:
        return f"its schema version {version} is newer than this code knows ({known})"

    verdict = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
    if verdict != ["ok"]:
        return f"it fails PRAGMA quick_check: {'; '.join(verdict[:3])}"
    if version == 0:
        return "it holds no schema (empty or truncated)"
    conn.execute("SELECT count(*) FROM instances").fetchone()
    return None


def _sort_out(
    item: Pair | ForeignFile,
    storage: Storage,
    queue: ArrivalQueue,
    result: ReconcileResult,
) -> None:
    if isinstance(item, ForeignFile):
        result.foreign += 1
        logger.warning("File not named as a stored file, left alone: %s", item.relative)
        return
    if item.stored is not None:
        result.files += 1
        if item.indexed is None:
            queue.add(item.stored)
        return

    # A file stored just after the walk passed its folder is not missing.
    indexed = item.indexed
    if indexed is None or storage.absolute(indexed.file_path).exists():
        return
    result.missing += 1
    logger.warning(
        "Indexed file missing from storage, kept in the index: %s"
        " (SOP Instance UID %s)",
        indexed.file_path,
        indexed.sop_uid,
    )


def _add_all(
    queue: ArrivalQueue,
    writer: IndexWriter,
    result: ReconcileResult,
    cancel: threading.Event | None,
) -> None:
    # Submitted a window at a time: the writer batches them into few
    # transactions, and memory stays bounded however many are missing.
    in_flight: list[tuple[StoredFile, Future[AddResult]]] = []
    for file in queue:
        if cancel is not None and cancel.is_set():
            break
        try:
            record = read_record(file)
        except UnreadableInstanceError as exc:
            result.unreadable += 1
            logger.warning("Unreadable file left in place: %s: %s", file.relative, exc)
            continue
        in_flight.append((file, writer.submit_instance(record)))
        if len(in_flight) >= MAX_IN_FLIGHT:
            _collect(in_flight, result)
    _collect(in_flight, result)


def _collect(
    in_flight: list[tuple[StoredFile, Future[AddResult]]], result: ReconcileResult
) -> None:
    for file, future in in_flight:
        try:
            added = future.result()
        except Exception:
            logger.exception(
                "Could not index %s; the next start retries", file.relative
            )
            continue
        if added.outcome is not Outcome.IDENTICAL:
            result.indexed += 1
            logger.info("Indexed %s, stored but not indexed before", file.relative)
        elif added.existing_path != file.relative:
            result.redundant += 1
            logger.info(
                "%s duplicates %s; left in place", file.relative, added.existing_path
            )
    in_flight.clear()


def _log_result(result: ReconcileResult) -> None:
    level = logging.WARNING if result.indexed or result.missing else logging.INFO
    logger.log(
        level,
        "Reconciled index with storage: %d files; %d indexed now; %d indexed"
        " file(s) missing from storage; %d unreadable and %d foreign file(s)"
        " left in place; %d redundant copies",
        result.files,
        result.indexed,
        result.missing,
        result.unreadable,
        result.foreign,
        result.redundant,
    )


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
