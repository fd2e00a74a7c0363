"""Durable storage of received DICOM files.

The data folder holds two trees:

``incoming/``
    Files being received. A file here was never acknowledged to anybody; at
    start, before the listener opens, whatever is left is a torn receive and
    is removed.
``storage/YYYY/MM/DD/<source AE>/<SOP Instance UID>.<sha256>.dcm``
    Stored files, plain DICOM Part 10, never modified after the rename that
    puts them there. The path alone tells the day of receipt, the sender and
    the content hash, so the index can be rebuilt from a header-only read.

A file reaches ``storage/`` only as: written to ``incoming/`` on the same
file system, fsynced, renamed into place, and the directory fsynced. Until
the rename returns the file does not exist under ``storage/``; after the
directory fsync it survives a power cut.

This module knows nothing about DICOM networking or the index.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from appliance.errors import StorageFullError

logger = logging.getLogger(__name__)

SPOOL_SUFFIX = ".part"
WRITEBACK_STEP_BYTES = 512 * 1024
HASH_CHUNK_BYTES = 1 << 20
HASH_QUEUE_CHUNKS = 64
PREFIX_BYTES = 256 * 1024

_UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_AE_SAFE = re.compile(r"[A-Za-z0-9_-]")
_STORED_NAME = re.compile(r"^(?P<uid>[0-9.]+|invalid-uid)\.(?P<sha>[0-9a-f]{64})\.dcm$")


class _HashWorker:
    """One long-lived thread that hashes the chunks of every spool, in order.

    Receiving runs on pynetdicom's network thread of each association;
    hashing there would add its whole cost to every transfer. hashlib drops
    the interpreter lock on large updates, so on a second core the hash
    keeps pace with the network and is ready moments after the last byte.
    One thread for all spools: starting a thread per received instance was
    measured to cost about a millisecond each (``bench/ingest.py``). The
    queue is bounded, so a receive waits (rather than fills the memory) if
    hashing ever falls far behind.
    """

    def __init__(self) -> None:
        self._chunks: queue.Queue[tuple[_BackgroundHash, bytes | None]] = queue.Queue(
            maxsize=HASH_QUEUE_CHUNKS
        )
        self._thread = threading.Thread(target=self._run, name="hash", daemon=True)
        self._thread.start()

    def put(self, owner: _BackgroundHash, chunk: bytes | None) -> None:
        """Queue `chunk` for `owner`; None marks the owner's last chunk."""
        self._chunks.put((owner, chunk))

    def _run(self) -> None:
        while True:
            owner, chunk = self._chunks.get()
            if chunk is None:
                owner.finished.set()
            else:
                owner.digest.update(chunk)


_WORKER_LOCK = threading.Lock()
_worker: _HashWorker | None = None


def _hash_worker() -> _HashWorker:
    global _worker
    with _WORKER_LOCK:
        if _worker is None:
            _worker = _HashWorker()
        return _worker


class _BackgroundHash:
    """The SHA-256 of one spool, computed by the shared :class:`_HashWorker`."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.finished = threading.Event()
        self._worker = _hash_worker()
        self._ended = False
        self._hex: str | None = None

    def update(self, data: bytes) -> None:
        """Queue `data`; blocks only if hashing falls far behind."""
        if data and not self._ended:
            self._worker.put(self, bytes(data))

    def hexdigest(self) -> str:
        """Wait for every queued chunk and return the digest."""
        if self._hex is None:
            self.stop()
            self._hex = self.digest.hexdigest()
        return self._hex

    def stop(self) -> None:
        """Wait until the queued chunks are hashed; idempotent."""
        if not self._ended:
            self._ended = True
            self._worker.put(self, None)
        self.finished.wait()


class SpoolFile:
    """A file being received: hashes what it writes, and never raises on write.

    A failed write (disk full, I/O error) is remembered in :attr:`error`, the
    partial file is removed at once to give the space back, and later writes
    are dropped. The receiver checks :attr:`error` when the data is complete
    and answers with a failure status instead of crashing mid-transfer.

    It offers the small file interface pynetdicom's chunked receive uses:
    ``name``, ``write``, ``file.flush`` and ``close``. ``flush`` is a no-op on
    purpose: pynetdicom flushes after every network fragment, and durability
    comes from :meth:`finish` instead.

    Parameters
    ----------
    directory : pathlib.Path
        Where to create the file: ``incoming/`` of the data folder.
    """

    def __init__(self, directory: Path) -> None:
        self._prefix = bytearray()
        self._written_back = 0
        self.size = 0
        self.error: OSError | None = None
        self.file = self
        self._hash = _BackgroundHash()
        self._handle: BinaryIO | None = None

        # Even creating the file can fail (disk full, too many open files);
        # the spool then swallows the data and reports the error at the end.
        try:
            fd, self.name = tempfile.mkstemp(dir=directory, suffix=SPOOL_SUFFIX)
        except OSError as exc:
            self.name = str(directory / f"unavailable-{uuid.uuid4().hex}")
            self.error = exc
            return
        self._handle = os.fdopen(fd, "wb", buffering=0)

    @property
    def path(self) -> Path:
        """The file's current path in ``incoming/``."""
        return Path(self.name)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of every byte written; call once writing is over."""
        return self._hash.hexdigest()

    def write(self, data: bytes) -> int:
        """Write and hash `data`; on failure remember the error, drop the rest."""
        if self.error is not None or self._handle is None:
            return len(data)
        try:
            _write_all(self._handle, data)
        except OSError as exc:
            self._fail(exc)
            return len(data)
        self._hash.update(data)
        self.size += len(data)
        if len(self._prefix) < PREFIX_BYTES:
            self._collect_prefix(data)
        if self.size - self._written_back >= WRITEBACK_STEP_BYTES:
            self._start_writeback()
        return len(data)

    def _start_writeback(self) -> None:
        # Ask the kernel to start writing what we have while the rest
        # arrives, so the fsync at the end waits for the tail only. On Linux,
        # POSIX_FADV_DONTNEED starts write-out of dirty pages without waiting.
        if self._handle is None or not hasattr(os, "posix_fadvise"):
            return
        start, length = self._written_back, self.size - self._written_back
        try:
            os.posix_fadvise(
                self._handle.fileno(), start, length, os.POSIX_FADV_DONTNEED
            )
        except OSError:
            return
        self._written_back = self.size

    @property
    def prefix(self) -> bytes:
        """The first :data:`PREFIX_BYTES` bytes (all of a smaller file)."""
        return bytes(self._prefix)

    def _collect_prefix(self, data: bytes) -> None:
        self._prefix += data[: PREFIX_BYTES - len(self._prefix)]

    def flush(self) -> None:
        """Do nothing; see the class docstring."""

    def finish(self) -> None:
        """Flush and fsync the file, recording any error in :attr:`error`."""
        self.write_out()
        self.sync()

    def write_out(self) -> None:
        """Hand buffered bytes to the OS, so that the file can be read back."""
        if self.error is not None or self._handle is None or self._handle.closed:
            return
        try:
            self._handle.flush()
        except OSError as exc:
            self._fail(exc)

    def sync(self) -> None:
        """Make what was written out durable (fsync); safe on another thread."""
        if self.error is not None or self._handle is None or self._handle.closed:
            return
        try:
            os.fsync(self._handle.fileno())
        except OSError as exc:
            self._fail(exc)

    def close(self) -> None:
        """Close the handle; safe to call more than once."""
        if self._handle is None:
            return
        try:
            self._handle.close()
        except OSError as exc:
            if self.error is None:
                self.error = exc

    def discard(self) -> None:
        """Close and remove the file, whatever state it is in."""
        self.close()
        self._hash.stop()
        _unlink_quietly(self.path)

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:
                pass
        _unlink_quietly(self.path)


@dataclass(frozen=True)
class StoredName:
    """What a stored file's path says about it."""

    source_ae: str
    sop_instance_uid: str
    sha256: str


class Storage:
    """The ``incoming/`` and ``storage/`` trees of one data folder.

    Parameters
    ----------
    data_dir : pathlib.Path
        The appliance's data folder.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.files_dir = data_dir / "storage"
        self.incoming_dir = data_dir / "incoming"

    def prepare(self) -> None:
        """Create both trees if needed."""
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.incoming_dir.mkdir(parents=True, exist_ok=True)

    def new_spool(self) -> SpoolFile:
        """Start a file in ``incoming/``; see :class:`SpoolFile`."""
        return SpoolFile(self.incoming_dir)

    def sweep_incoming(self) -> int:
        """Remove receives torn by a crash; call only before the listener opens.

        Returns
        -------
        int
            How many leftover files were removed.
        """
        removed = 0
        for entry in os.scandir(self.incoming_dir):
            if entry.is_file() and entry.name.endswith(SPOOL_SUFFIX):
                _unlink_quietly(Path(entry.path))
                removed += 1
        if removed:
            logger.warning("Removed %d unacknowledged partial receive(s)", removed)
        return removed

    def relative_path(
        self, received: datetime, source_ae: str, sop_instance_uid: str, sha256: str
    ) -> PurePosixPath:
        """Return where a file belongs under ``storage/``.

        A SOP Instance UID that is not a valid UID (a hostile or broken peer)
        never becomes part of a path; such files are named ``invalid-uid``.
        """
        uid = sop_instance_uid if _is_uid(sop_instance_uid) else "invalid-uid"
        return PurePosixPath(
            f"{received:%Y}",
            f"{received:%m}",
            f"{received:%d}",
            encode_ae(source_ae),
            f"{uid}.{sha256}.dcm",
        )

    def absolute(self, relative: PurePosixPath | str) -> Path:
        """Return the absolute path of a file under ``storage/``."""
        return self.files_dir / relative

    def commit(self, spool: SpoolFile, relative: PurePosixPath) -> Path:
        """Make a finished spool file durable under ``storage/``.

        Parameters
        ----------
        spool : SpoolFile
            Finished (:meth:`SpoolFile.finish`) without error.
        relative : pathlib.PurePosixPath
            From :meth:`relative_path`.

        Returns
        -------
        pathlib.Path
            The stored file. If a file already sits there, it has the same
            content (the name holds the hash), so the spool is dropped.

        Raises
        ------
        StorageFullError
            If the disk is full or refuses the write; the spool is removed.
        """
        target = self.absolute(relative)
        try:
            self._make_parents_durable(target.parent)
            if target.exists():
                spool.discard()
                return target
            os.rename(spool.path, target)
            _fsync_directory(target.parent)
        except OSError as exc:
            spool.discard()
            raise StorageFullError(f"cannot store {relative}: {exc}") from exc
        return target

    def iter_files(self) -> Iterator[Path]:
        """Yield every stored file, walking the tree lazily (flat memory)."""
        stack = [self.files_dir]
        while stack:
            folder = stack.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    yield Path(entry.path)

    def remove_redundant(self, relative: PurePosixPath) -> None:
        """Remove a just-stored file found to duplicate an indexed one.

        Only for a file this process stored moments ago and that the index
        reported as an identical copy of another path: never an indexed file.
        """
        _unlink_quietly(self.absolute(relative))

    def parse_name(self, path: Path) -> StoredName | None:
        """Read source AE, UID and hash back from a stored path, or None."""
        match = _STORED_NAME.match(path.name)
        if match is None:
            return None
        return StoredName(
            source_ae=decode_ae(path.parent.name),
            sop_instance_uid=match["uid"],
            sha256=match["sha"],
        )

    def _make_parents_durable(self, folder: Path) -> None:
        # Create missing folders top-down, fsyncing each new entry's parent.
        missing = []
        while not folder.exists() and folder != self.files_dir:
            missing.append(folder)
            folder = folder.parent
        for new_folder in reversed(missing):
            try:
                new_folder.mkdir()
            except FileExistsError:
                continue
            _fsync_directory(new_folder.parent)


def hash_file(path: Path) -> str:
    """Return the hex SHA-256 of a whole file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def encode_ae(ae_title: str) -> str:
    """Turn an AE title into a safe folder name (``%XX`` for odd characters)."""
    return (
        "".join(
            char if _AE_SAFE.fullmatch(char) else f"%{ord(char):02X}"
            for char in ae_title
        )
        or "%20"
    )


def decode_ae(folder_name: str) -> str:
    """Invert :func:`encode_ae`."""
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m[1], 16)), folder_name)


def _is_uid(value: str) -> bool:
    return len(value) <= 64 and _UID_PATTERN.match(value) is not None


def _write_all(handle: BinaryIO, data: bytes) -> None:
    # An unbuffered write may take only part of the data; loop until done.
    view = memoryview(data)
    while view:
        written = handle.write(view)
        if not written:
            raise OSError(f"write accepted no bytes of {len(view)}")
        view = view[written:]


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        logger.exception("Could not remove %s", path)
