"""Reading ``index.db`` while a rebuild may swap it for a new file.

SQLite finds a database's ``-wal`` and ``-shm`` files by name, so a database
file must never be renamed or replaced under an open connection. The rule
is therefore simple: a reader opens its connection for one short piece of
work (one web request, one page of a check) inside :func:`index_reader`, and
closes it. Never keep a connection to ``index.db`` across requests.

:func:`index_reader` holds a shared lock on ``index.db.lock`` for as long as
the connection is open; the swap (:func:`readers_held_off`) takes the lock
exclusively, so it waits for open readers to finish and new readers wait
for the swap, which takes a fraction of a second. The lock is ``flock``, so
it works between threads and between processes (``appliance check`` beside
the running service). Tools that do not take it (a ``sqlite3`` shell) must
not be left open on ``index.db``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance.index.schema import open_index_reader

logger = logging.getLogger(__name__)

SWAP_WAIT_SECONDS = 300.0
_POLL_SECONDS = 0.05


def lock_path(index_path: Path) -> Path:
    """Return the lock file that guards `index_path` against a swap."""
    return index_path.with_name(index_path.name + ".lock")


@contextmanager
def index_reader(index_path: Path) -> Iterator[sqlite3.Connection]:
    """Open a read-only connection to the index for one short piece of work.

    Parameters
    ----------
    index_path : pathlib.Path
        The ``index.db`` file.

    Yields
    ------
    sqlite3.Connection
        Closed when the block ends.
    """
    with _flock(lock_path(index_path), fcntl.LOCK_SH):
        conn = open_index_reader(index_path)
        try:
            yield conn
        finally:
            conn.close()


@contextmanager
def readers_held_off(
    index_path: Path, wait_seconds: float = SWAP_WAIT_SECONDS
) -> Iterator[None]:
    """Wait until no reader is open, and keep new ones waiting meanwhile.

    Raises
    ------
    TimeoutError
        If readers stayed open for `wait_seconds`.
    """
    fd = _open_lock(lock_path(index_path))
    try:
        _acquire_exclusive(fd, wait_seconds)
        yield
    finally:
        os.close(fd)


@contextmanager
def _flock(path: Path, operation: int) -> Iterator[None]:
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _acquire_exclusive(fd: int, wait_seconds: float) -> None:
    # Polled rather than blocking, so that a reader that never ends shows up
    # in the log and in an error instead of hanging the swap for ever.
    deadline = time.monotonic() + wait_seconds
    next_warning = time.monotonic() + 10
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"index readers stayed open for {wait_seconds:.0f} s")
        if now > next_warning:
            logger.warning("Waiting for index readers to close before the swap")
            next_warning = now + 10
        time.sleep(_POLL_SECONDS)
