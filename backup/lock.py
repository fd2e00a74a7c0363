"""One backup at a time per backup folder: ``flock`` on ``TARGET/.backup.lock``.

The kernel drops the lock when its holder ends, however it ends, so a crash
never leaves a stale lock. ``flock`` locks belong to an open file, so two
threads of one process exclude each other just as two processes do. A
restore takes the lock shared, so that retention never removes the snapshot
it reads.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from backup import layout
from backup.errors import BackupBusyError, TargetReadOnlyError


class TargetLock:
    """The lock of one backup folder, taken for the life of a ``with`` block.

    Parameters
    ----------
    target : pathlib.Path
        The backup folder; it must exist.
    shared : bool
        Take it shared (restore, verify) rather than exclusive (backup).
    """

    def __init__(self, target: Path, *, shared: bool = False) -> None:
        self.path = target / layout.TARGET_LOCK
        self.shared = shared
        self._fd: int | None = None

    def __enter__(self) -> TargetLock:
        self.acquire()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock or fail at once.

        A shared lock on a read-only folder without a lock file is skipped:
        nobody can be writing there.

        Raises
        ------
        BackupBusyError
            If a backup into this folder runs.
        TargetReadOnlyError
            If an exclusive lock is wanted and the folder refuses writes.
        """
        try:
            fd = self._open()
        except OSError as exc:
            if self.shared:
                return
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise TargetReadOnlyError(
                    f"the backup folder {self.path.parent} is read-only: "
                    "backups cannot be written"
                ) from exc
            raise
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BackupBusyError(
                f"a backup into {self.path.parent} is running; try again when "
                "it has finished"
            ) from None
        self._fd = fd

    def release(self) -> None:
        """Give the lock up; safe to call when not held."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        # flock needs no write access: a lock file that another user created
        # (root running the command line) still serves everybody.
        if self.shared:
            return os.open(self.path, os.O_RDONLY)
        fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
        if read_only_fs(fd):
            os.close(fd)
            raise OSError(errno.EROFS, "read-only file system")
        return fd


def read_only_fs(fd: int) -> bool:
    """Tell whether an open file lives on a read-only mount."""
    return bool(os.fstatvfs(fd).f_flag & os.ST_RDONLY)


def backup_running(target: Path) -> bool:
    """Tell whether a backup into `target` holds its lock right now."""
    try:
        fd = os.open(target / layout.TARGET_LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def data_folder_holder(data_dir: Path) -> str | None:
    """Return who holds a data folder's ``appliance.lock``, or None."""
    try:
        fd = os.open(data_dir / layout.DATA_LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 200).decode(errors="replace").strip() or "another process"
    finally:
        os.close(fd)
    return None
