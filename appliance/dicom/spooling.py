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
from pathlib import Path
from typing import Any

from pynetdicom import _config, dimse_messages

from appliance.storage import SpoolFile, Storage

logger = logging.getLogger(__name__)


class SpoolRegistry:
    """Spools being received, by path, with the network thread that owns each.

    The store handler claims its spool by path; whatever an association did
    not get to hand over (aborted mid-transfer) is discarded when it closes.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._lock = threading.Lock()
        self._spools: dict[str, tuple[SpoolFile, threading.Thread]] = {}

    def create(self, *_args: Any, **_kwargs: Any) -> SpoolFile:
        """Stand in for ``NamedTemporaryFile``: called on a network thread."""
        spool = self._storage.new_spool()
        with self._lock:
            self._spools[spool.name] = (spool, threading.current_thread())
        return spool

    def claim(self, path: Path | str) -> SpoolFile | None:
        """Take the spool received at `path` out of the registry."""
        with self._lock:
            entry = self._spools.pop(str(path), None)
        return entry[0] if entry else None

    def discard_owned_by(self, owner: object) -> int:
        """Discard the unclaimed spools of one network thread; return how many."""
        with self._lock:
            names = [n for n, (_, t) in self._spools.items() if t is owner]
            entries = [self._spools.pop(name) for name in names]
        for spool, _ in entries:
            spool.discard()
        return len(entries)


def install(registry: SpoolRegistry) -> None:
    """Route pynetdicom's chunked C-STORE receive into `registry`'s spools."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    dimse_messages.NamedTemporaryFile = registry.create  # type: ignore[assignment]
