"""File operations of the engine: copy while hashing, fsync, hash from disk.

Every copy goes to a new file (``O_EXCL``), is hashed from the bytes read,
and is fsynced before it counts. Reads for verification first ask the kernel
to drop the file's cached pages, so that the hash comes from the disk and
not from memory, where the operating system allows it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from backup.errors import TargetFullError

CHUNK_BYTES = 1 << 20
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

# One buffer a thread, reused file after file: a fresh megabyte for each of
# thousands of files cost about 5 % of a run's processor time.
_buffers = threading.local()


@dataclass(frozen=True)
class Copied:
    """What a copy wrote: its size and the SHA-256 of the bytes read."""

    size: int
    sha256: str


def copy_file(source: Path, target: Path) -> Copied:
    """Copy `source` to the new file `target`, hashing and fsyncing it.

    Raises
    ------
    TargetFullError
        If the target's disk is full; the partial copy is removed.
    OSError
        Any other read or write failure, including `target` existing.
    """
    digest = hashlib.sha256()
    buffer, view = _buffer()
    size = 0
    with source.open("rb", buffering=0) as reader:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            while count := reader.readinto(buffer):
                digest.update(view[:count])
                _write_all(fd, view[:count])
                size += count
            os.fsync(fd)
            forget_cached(fd)
        except OSError as exc:
            os.close(fd)
            target.unlink(missing_ok=True)
            raise_if_full(exc, target)
            raise
        os.close(fd)
    return Copied(size, digest.hexdigest())


def hash_file(path: Path, *, from_disk: bool = False) -> str:
    """Return the SHA-256 of a whole file.

    Parameters
    ----------
    path : pathlib.Path
        The file.
    from_disk : bool
        Drop its cached pages first, so that the bytes come from the device.
    """
    digest = hashlib.sha256()
    buffer, view = _buffer()
    with path.open("rb", buffering=0) as reader:
        if from_disk:
            forget_cached(reader.fileno())
        while count := reader.readinto(buffer):
            digest.update(view[:count])
        forget_cached(reader.fileno())
    return digest.hexdigest()


def forget_cached(fd: int) -> None:
    """Ask the kernel to drop a file's clean cached pages (Linux; best effort)."""
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by path."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_folder(path: Path) -> None:
    """Create a folder and its missing parents, mapping a full disk."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise_if_full(exc, path)
        raise


def remove_tree(path: Path) -> None:
    """Remove a folder and everything in it; a missing folder is fine."""
    if path.exists():
        shutil.rmtree(path)


def raise_if_full(exc: OSError, path: Path) -> None:
    """Raise :class:`TargetFullError` from `exc` if it means a full disk.

    Raises
    ------
    TargetFullError
        When `exc` is ENOSPC, EDQUOT or EFBIG.
    """
    if exc.errno in FULL_ERRNOS:
        raise TargetFullError(f"the backup disk is full: cannot write {path}") from exc


def _buffer() -> tuple[bytearray, memoryview]:
    # This thread's read buffer, and a view of it to slice without copying.
    if not hasattr(_buffers, "buffer"):
        _buffers.buffer = bytearray(CHUNK_BYTES)
        _buffers.view = memoryview(_buffers.buffer)
    return _buffers.buffer, _buffers.view


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]
