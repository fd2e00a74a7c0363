"""Receive C-STORE data sets straight into the data folder's ``incoming/``.

pynetdicom's chunked receive (``STORE_RECV_CHUNKED_DATASET``) writes each data
set to a ``NamedTemporaryFile`` in the system temp folder, and a write error
there (disk full) escapes into its network thread and tears the association
down without a status. We swap that factory, in pynetdicom's
``dimse_messages`` module, for one that makes a
:class:`~appliance.storage.SpoolFile` in ``incoming/``: on the same file system
as ``storage/`` (so storing is a rename, never a copy), hashed as it arrives,
and never raising on write, so the store handler can answer 0xA700.

This patches a module-level name inside pynetdicom, tested against the
pynetdicom version pinned in ``pyproject.toml``; the tests send real data sets
through it, so an upgrade that changes the name fails them loudly.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import _config, dimse_messages
from pynetdicom.events import Event

from appliance.dicom.completeness import Extent, extent_of
from appliance.index import (
    Header,
    InstanceRecord,
    describe_header,
)
from appliance.storage import SpoolFile, Storage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Described:
    """A data set's index record, and where its header says it ends."""

    record: InstanceRecord
    extent: Extent | None


@dataclass
class Received:
    """A spool, the network thread writing it, and its fsync once started."""

    spool: SpoolFile
    owner: threading.Thread
    syncing: Future[None] | None = None

    def make_durable(self) -> None:
        """Flush and fsync the spool, or wait for the fsync already started.

        Errors are recorded in the spool's ``error``, as
        :meth:`~appliance.storage.SpoolFile.finish` does.
        """
        if self.syncing is None:
            self.spool.finish()
        else:
            self.syncing.result()

    def discard(self) -> None:
        """Remove the spool once no fsync is using its file handle."""
        if self.syncing is not None:
            self.syncing.exception()
        self.spool.discard()


class SpoolRegistry:
    """Spools being received, by path, with the network thread that owns each.

    The store handler claims its spool by path; whatever an association did
    not get to hand over (aborted mid-transfer) is discarded when it closes.

    The fsync starts as soon as the last fragment is in
    (:meth:`start_sync`), on a worker thread: pynetdicom hands the complete
    message to the store handler only at the association thread's next poll,
    up to a millisecond later, and the disk can use that time.

    The header is parsed by the handler, from the first bytes the spool keeps
    in memory, while the file is fsynced. Parsing it on a worker thread as
    soon as those bytes arrived was measured slower (``bench/ingest.py``):
    the parse then competes for the interpreter lock with the network thread
    that receives the pixel data.

    Parameters
    ----------
    storage : Storage
        Where the spools are made.
    max_associations : int
        The listener's association limit: as many fsyncs may run at once.
    """

    def __init__(self, storage: Storage, max_associations: int) -> None:
        self._storage = storage
        self._lock = threading.Lock()
        self._received: dict[str, Received] = {}

        # One fsync at a time per association at most; threads start only
        # when no idle one is left, so a quiet listener keeps few.
        self._syncers = ThreadPoolExecutor(
            max_workers=max(1, max_associations), thread_name_prefix="fsync"
        )

    def create(self, *_args: Any, **_kwargs: Any) -> SpoolFile:
        """Stand in for ``NamedTemporaryFile``: called on a network thread."""
        spool = self._storage.new_spool()
        received = Received(spool, threading.current_thread())
        with self._lock:
            self._received[spool.name] = received
        return spool

    def start_sync(self, event: Event) -> None:
        """Start the fsync of a data set just received in full.

        Bound to ``EVT_DIMSE_RECV``, which pynetdicom triggers on the network
        thread once a message's last fragment is in, before the message is
        reset. Messages without a spool of ours (C-ECHO, queries) are left
        alone. If a pynetdicom upgrade stops triggering it, or drops the
        ``_data_set_file`` attribute read here, the store handler fsyncs by
        itself: nothing is lost but the head start.
        """
        spool = getattr(event.message, "_data_set_file", None)
        if not isinstance(spool, SpoolFile):
            return

        with self._lock:
            received = self._received.get(spool.name)
            if received is None or received.syncing is not None:
                return
            received.syncing = self._syncers.submit(spool.finish)

    def claim(self, path: Path | str) -> Received | None:
        """Take what was received at `path` out of the registry."""
        with self._lock:
            return self._received.pop(str(path), None)

    def discard_owned_by(self, owner: object) -> int:
        """Discard the unclaimed spools of one network thread; return how many."""
        with self._lock:
            names = [n for n, r in self._received.items() if r.owner is owner]
            entries = [self._received.pop(name) for name in names]
        for entry in entries:
            entry.discard()
        return len(entries)


def describe(header: Header) -> Described:
    """Describe a freshly parsed header: its record, and where it ends.

    Raises
    ------
    UnreadableInstanceError
        If the header lacks a required UID or cannot be decoded.
    """
    # The extent first: describing converts elements (see extent_of).
    extent = extent_of(header)
    return Described(describe_header(header.dataset), extent)


def install(registry: SpoolRegistry) -> None:
    """Route pynetdicom's chunked C-STORE receive into `registry`'s spools."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    dimse_messages.NamedTemporaryFile = registry.create  # type: ignore[assignment]
