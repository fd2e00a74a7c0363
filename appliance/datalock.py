"""One process at a time owns a data folder's index: ``appliance.lock``.

``appliance serve`` holds the lock as long as it runs, and so does an
``appliance rebuild-index`` run while the service is stopped. A second
process that needs the index writer finds the lock taken and is told who
holds it. The lock is ``flock`` on ``DATA_DIR/appliance.lock``: the kernel
drops it when its process ends, however it ends, so a crash never leaves a
stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from appliance.errors import ApplianceError

LOCK_NAME = "appliance.lock"


class DataFolderBusyError(ApplianceError):
    """Another appliance process already owns this data folder."""


class DataFolderLock:
    """The exclusive lock on one data folder.

    Parameters
    ----------
    data_dir : pathlib.Path
        The data folder.
    role : str
        What the holder does, shown to whoever finds the lock taken.
    """

    def __init__(self, data_dir: Path, role: str) -> None:
        self.path = data_dir / LOCK_NAME
        self.role = role
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or fail at once.

        Raises
        ------
        DataFolderBusyError
            Naming the process that holds it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataFolderBusyError(
                f"{self.path.parent} is in use by {holder(self.path.parent)}; "
                "stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.role} (pid {os.getpid()})\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Give the lock up; safe to call when not held."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def holder(data_dir: Path) -> str | None:
    """Return who holds the data folder's lock, or None if nobody does."""
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 200).decode(errors="replace").strip() or "another process"
    finally:
        os.close(fd)
    return None
