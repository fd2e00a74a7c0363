"""The C-STORE handler: never acknowledge what is not durable and indexed.

For each received data set (PS3.4 B.2.3 statuses):

1. the spool in ``incoming/`` is fsynced; a write that failed → 0xA700;
2. its header is read, and the data set checked to end where its encoding
   says (:mod:`~appliance.dicom.completeness`); unreadable, missing UIDs
   or cut short → 0xC000;
3. it is renamed into ``storage/`` and the folder fsynced; failure → 0xA700;
4. it is indexed in one SQLite transaction; failure → 0xA700 (the stored
   file is picked up by the reconcile step at the next start);
5. only then Success (0x0000).

Pixel data is never decoded. An identical re-send answers Success and keeps
one copy; the same SOP Instance UID with other content keeps both, flagged.
The handler never raises: every failure is a status and a log line.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

from pynetdicom.events import Event

from appliance.dicom.completeness import check_complete
from appliance.dicom.spooling import Described, Received, SpoolRegistry, describe
from appliance.errors import StorageFullError
from appliance.index import (
    IndexWriter,
    InstanceRecord,
    Outcome,
    UnreadableInstanceError,
    locate,
    parse_header,
    parse_header_prefix,
    scan_header,
)
from appliance.storage import SpoolFile, Storage

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


@dataclass
class StoreResult:
    """What one C-STORE came to, for the log and the association summary."""

    status: int
    sop_instance_uid: str
    size: int
    note: str


class StoreHandler:
    """Handle ``evt.EVT_C_STORE`` for the listener.

    Parameters
    ----------
    storage : Storage
        The data folder's storage.
    writer : IndexWriter
        The index's one writer.
    spools : SpoolRegistry
        Where pynetdicom's chunked receive left the data set.
    on_result : callable
        Told of every result, for the association's summary line.
    """

    def __init__(
        self,
        storage: Storage,
        writer: IndexWriter,
        spools: SpoolRegistry,
        on_result: Callable[[Event, StoreResult], None],
    ) -> None:
        self._on_result = on_result
        self._storage = storage
        self._writer = writer
        self._spools = spools
        self._in_flight = 0
        self._idle = threading.Condition()
        self._describers = ThreadPoolExecutor(thread_name_prefix="describe")

    def __call__(self, event: Event) -> int:
        """Store one instance and return its status; never raises."""
        started = time.monotonic()
        with self._idle:
            self._in_flight += 1
        try:
            result = self._handle(event)
        except Exception:
            logger.exception("Unexpected failure while storing; answering 0xA700")
            result = StoreResult(OUT_OF_RESOURCES, _requested_uid(event), 0, "error")
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

        _log_store(event, result, time.monotonic() - started)
        self._on_result(event, result)
        return result.status

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no store is in progress; return False on time-out."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def _handle(self, event: Event) -> StoreResult:
        requested_uid = _requested_uid(event)
        received = self._spools.claim(event.dataset_path)
        if received is None:
            logger.error("No received data found for a C-STORE request")
            return StoreResult(OUT_OF_RESOURCES, requested_uid, 0, "no data")
        try:
            return self._store(event, received, requested_uid)
        finally:
            # After a successful rename this only closes the handle.
            received.discard()

    def _store(
        self, event: Event, received: Received, requested_uid: str
    ) -> StoreResult:
        spool = received.spool
        # 1. The received bytes must be on disk before anything else, and
        # 2. the header is read (only the header) meanwhile, so that a data
        #    set the index cannot take is refused, not kept. The fsync was
        #    started when the last fragment came in (SpoolRegistry), and the
        #    parse runs on a worker while this thread waits for the fsync
        #    without holding the interpreter lock.
        spool.write_out()
        if spool.error is not None:
            return _failed(OUT_OF_RESOURCES, requested_uid, spool, spool.error)
        describing = self._describers.submit(
            self._describe, event, received, requested_uid
        )
        received.make_durable()
        try:
            record, relative = describing.result()
        except UnreadableInstanceError as exc:
            # A failed fsync removes the file, which the parse may trip on.
            if spool.error is not None:
                return _failed(OUT_OF_RESOURCES, requested_uid, spool, spool.error)
            return _failed(CANNOT_UNDERSTAND, requested_uid, spool, exc)
        if spool.error is not None:
            return _failed(OUT_OF_RESOURCES, requested_uid, spool, spool.error)
        if record.sop_instance_uid != requested_uid:
            logger.warning(
                "Data set SOP Instance UID %s differs from the request's %s",
                record.sop_instance_uid,
                requested_uid,
            )

        # 3. Durable in storage/.
        try:
            self._storage.commit(spool, relative)
        except StorageFullError as exc:
            return _failed(OUT_OF_RESOURCES, record.sop_instance_uid, spool, exc)

        # 4. Indexed; only then Success.
        return self._index(record, relative)

    def _describe(
        self, event: Event, received: Received, requested_uid: str
    ) -> tuple[InstanceRecord, PurePosixPath]:
        """Read the spool's header into an index record and a storage path.

        Raises
        ------
        UnreadableInstanceError
            If the data set cannot be parsed, lacks a required UID, or is cut
            short.
        """
        spool = received.spool
        prefix = spool.prefix
        described = _described(spool, prefix)
        check_complete(spool.path, spool.size, described.extent, prefix)
        draft = described.record
        received_at = datetime.fromtimestamp(os.stat(spool.path).st_mtime)
        relative = self._storage.relative_path(
            received_at,
            event.assoc.requestor.ae_title,
            draft.sop_instance_uid or requested_uid,
            spool.sha256,
        )
        record = locate(
            draft,
            file_path=str(relative),
            file_size=spool.size,
            sha256=spool.sha256,
            received_at=received_at,
            source_ae=event.assoc.requestor.ae_title,
        )
        return record, relative

    def _index(self, record: InstanceRecord, relative: PurePosixPath) -> StoreResult:
        uid = record.sop_instance_uid
        try:
            added = self._writer.add_instance(record)
        except Exception as exc:
            logger.error("Could not index %s, kept on disk for reconcile: %s", uid, exc)
            return StoreResult(OUT_OF_RESOURCES, uid, record.file_size, "not indexed")

        if added.outcome is Outcome.IDENTICAL:
            if added.existing_path != str(relative):
                self._storage.remove_redundant(relative)
            return StoreResult(SUCCESS, uid, record.file_size, "identical re-send")
        if added.outcome is Outcome.ADDED_DIFFERING_COPY:
            return StoreResult(SUCCESS, uid, record.file_size, "differing copy kept")
        return StoreResult(SUCCESS, uid, record.file_size, "stored")


def _described(spool: SpoolFile, prefix: bytes) -> Described:
    """Describe the received header, from its first bytes if they hold it.

    The quick scan (:func:`~appliance.index.scan_header`) reads the usual
    layout; pydicom reads whatever it leaves, from `prefix` or the file.

    Raises
    ------
    UnreadableInstanceError
        If the data set cannot be parsed or lacks a required UID.
    """
    whole_file = spool.size == len(prefix)
    header = scan_header(prefix, whole_file=whole_file) or parse_header_prefix(
        prefix, whole_file=whole_file
    )
    if header is None:
        header = parse_header(spool.path)
    return describe(header)


def _failed(
    status: int, uid: str, spool: SpoolFile, error: BaseException
) -> StoreResult:
    logger.error("Refusing %s with 0x%04X: %s", uid, status, error)
    return StoreResult(status, uid, spool.size, "refused")


def _requested_uid(event: Event) -> str:
    try:
        return str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
    except Exception:
        return ""


def _log_store(event: Event, result: StoreResult, seconds: float) -> None:
    requestor = event.assoc.requestor
    logger.info(
        "C-STORE from %s at %s:%s: %s status 0x%04X (%s), %d bytes, %.0f ms",
        requestor.ae_title,
        requestor.address,
        requestor.port,
        result.sop_instance_uid,
        result.status,
        result.note,
        result.size,
        seconds * 1000,
    )
