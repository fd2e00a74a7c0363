"""Exceptions of the backup engine, each with a message an owner can act on.

Every message is one line that names the folder or snapshot concerned, so
that the command line, the journal and the web can show it as it is.
"""


class BackupError(Exception):
    """Base class of every error the backup engine raises on purpose."""


class TargetError(BackupError):
    """The backup folder cannot take a backup."""


class TargetMissingError(TargetError):
    """The backup folder does not exist (disk unplugged, share not mounted)."""


class TargetReadOnlyError(TargetError):
    """The backup folder refuses writes (read-only mount or permissions)."""


class TargetFullError(TargetError):
    """The backup folder has no room for the snapshot."""


class BackupBusyError(BackupError):
    """Another backup into the same folder is running."""


class BackupCancelledError(BackupError):
    """The backup was stopped before it completed (the appliance is stopping)."""


class SnapshotNotFoundError(BackupError):
    """No complete snapshot goes by the given name or path."""


class SnapshotDamagedError(BackupError):
    """A snapshot is incomplete or fails verification; it is never restored."""


class RestoreRefusedError(BackupError):
    """A restore cannot go ahead (the data folder is in use, or similar)."""
