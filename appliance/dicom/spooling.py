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

from appliance.dicom.completeness import Extent, extent_of
from appliance.index import (
    Header,
    InstanceRecord,
    UnreadableInstanceError,
    describe_header,
    parse_header_prefix,
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
    """A spool, the network thread writing it, and its header read early."""

    spool: SpoolFile
    owner: threading.Thread
    early: Future[Described | None] | None = None


class SpoolRegistry:
    """Spools being received, by path, with the network thread that owns each.

    The store handler claims its spool by path; whatever an association did
    not get to hand over (aborted mid-transfer) is discarded when it closes.

    As soon as the first bytes of a data set are in, its header is parsed on
    a worker thread while the rest of the data set (the pixel data) is still
    on the wire, so the handler rarely has to parse anything itself.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._lock = threading.Lock()
        self._received: dict[str, Received] = {}
        self._parsers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="header")

    def create(self, *_args: Any, **_kwargs: Any) -> SpoolFile:
        """Stand in for ``NamedTemporaryFile``: called on a network thread."""
        received: Received | None = None

        def parse_early(prefix: bytes) -> None:
            if received is not None:
                received.early = self._parsers.submit(describe_prefix, prefix)

        spool = self._storage.new_spool(on_prefix=parse_early)
        received = Received(spool, threading.current_thread())
        with self._lock:
            self._received[spool.name] = received
        return spool

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
            entry.spool.discard()
        return len(entries)


def describe_prefix(prefix: bytes) -> Described | None:
    """Describe a data set from its first bytes; None if they are not enough.

    None also when the header is unusable: the handler then reads the whole
    file and reports the error itself.
    """
    header = parse_header_prefix(prefix, whole_file=False)
    if header is None:
        return None
    try:
        return describe(header)
    except UnreadableInstanceError:
        return None


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
