"""Reading many stored files' headers on worker processes, in order.

Parsing a header is pure Python (pydicom) and holds the GIL, so a rebuild
reads headers on a pool of worker processes while its own thread writes
SQLite. Files go out in batches and come back in the order they went; only a
few batches per worker are in flight at once, so memory stays flat however
many files there are. A small rebuild reads on the calling thread: starting
workers would cost more than they save.

Workers start with ``forkserver``, never ``fork``: the serving process runs
other threads (listener, writer, web) whose locks a forked child would
inherit locked. Like every ``multiprocessing`` start method but ``fork``,
this imports the main script in each worker, so a script that rebuilds must
guard its entry point with ``if __name__ == "__main__":`` (the ``appliance``
command and ``bench/rebuild.py`` do).

The fork server is told to import this module (and so pydicom) once, when
it starts: each worker is then forked ready to parse. Without that, every
worker of every rebuild imported pydicom itself, about 0.25 s before the
first header was read (Python 3.11's fork server does not preload the main
script, whatever its default says).

Measured on the 2-core development machine (``bench/rebuild.py``, 1,000
files, 5 rounds, machine otherwise idle): a rebuild takes about 0.85 times a
bare header scan, against 1.5 times before the fork server preloaded
pydicom and ``record_from_header`` read converted values directly. What
remains is pydicom's parsing; SQLite takes a tenth of the time. The first
rebuild in a process also starts the fork server (about 0.2 s).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice

from appliance.index.crawl import StoredFile, read_record
from appliance.index.records import InstanceRecord, UnreadableInstanceError

BATCH_FILES = 64
BATCHES_PER_WORKER = 3
SERIAL_BELOW = 500
MAX_WORKERS = 4

Read = InstanceRecord | str
"""A file's index record, or the reason it cannot be read."""


def read_in_order(
    files: Iterable[StoredFile], count: int
) -> Iterator[tuple[StoredFile, Read]]:
    """Yield each file with its record (or why it is unreadable), in order.

    Parameters
    ----------
    files : Iterable[StoredFile]
        Read lazily, a few batches ahead.
    count : int
        How many files there are; few are read on this thread.
    """
    workers = min(os.cpu_count() or 1, MAX_WORKERS)
    if workers < 2 or count < SERIAL_BELOW:
        for file in files:
            yield file, read_or_reason(file)
        return

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        window: deque[tuple[list[StoredFile], Future[list[Read]]]] = deque()
        for batch in _batches(files):
            window.append((batch, pool.submit(read_batch, batch)))
            if len(window) >= workers * BATCHES_PER_WORKER:
                yield from _take(window.popleft())
        while window:
            yield from _take(window.popleft())


def read_batch(batch: list[StoredFile]) -> list[Read]:
    """Read a batch of files; runs on a worker process."""
    return [read_or_reason(file) for file in batch]


def read_or_reason(file: StoredFile) -> Read:
    """Return the file's record, or the reason it cannot be read."""
    try:
        return read_record(file)
    except UnreadableInstanceError as exc:
        return str(exc)


def _batches(files: Iterable[StoredFile]) -> Iterator[list[StoredFile]]:
    iterator = iter(files)
    while batch := list(islice(iterator, BATCH_FILES)):
        yield batch


def _take(
    item: tuple[list[StoredFile], Future[list[Read]]],
) -> Iterator[tuple[StoredFile, Read]]:
    batch, future = item
    yield from zip(batch, future.result(), strict=True)
