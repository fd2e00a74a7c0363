"""The restore wizard's engine: verify a snapshot, restore it, switch to it.

The owner restores from the web while the appliance keeps serving until the
last moment. :class:`RestoreWizard` runs each long step on a thread of its
own and tells the web where it stands (:meth:`RestoreWizard.status`):

1. **verify** a chosen snapshot: every file is hashed against its manifest
   (:func:`backup.verify.verify_snapshot`), which takes minutes on a large
   archive. Nothing is changed.
2. **restore** the snapshot that was just verified: it is copied into a new
   folder beside the data folder (:func:`backup.restore.stage`) while the
   appliance still receives and serves. Then the *switch* the appliance
   provides stops the listener and the index, puts the copy in place of the
   data folder (the replaced one is moved aside, never deleted) and starts
   them again on the restored data. Only the switch, a few seconds, is
   without service: the web answers "restoring" meanwhile.

One step at a time: a second request while one runs is refused. Studies a
modality sends between the verification and the switch are in the folder
moved aside, not in the restored one; the wizard says so before the owner
confirms.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from backup.errors import BackupError, SnapshotNotFoundError
from backup.lock import TargetLock
from backup.restore import stage
from backup.snapshots import Snapshot, list_snapshots
from backup.target import human_bytes
from backup.verify import verify_snapshot

logger = logging.getLogger(__name__)

Switch = Callable[[Path], Path | None]
"""Puts a staged folder in place of the data folder and serves from it.

Returns where the replaced data went (None if nothing was replaced). On
failure it raises, after serving again from the data it did not replace.
"""


class Phase(enum.StrEnum):
    """Where the wizard stands."""

    IDLE = "idle"
    VERIFYING = "verifying"
    VERIFIED = "verified"
    DAMAGED = "damaged"
    COPYING = "copying"
    SWITCHING = "switching"
    DONE = "done"
    FAILED = "failed"


BUSY = (Phase.VERIFYING, Phase.COPYING, Phase.SWITCHING)


class RestoreBusyError(BackupError):
    """A verification or a restore is already running."""


class NotVerifiedError(BackupError):
    """The snapshot to restore is not the one just verified without fault."""


@dataclass(frozen=True)
class RestoreStatus:
    """What the wizard shows; no patient data.

    Attributes
    ----------
    phase : Phase
        The current step, or how the last one ended.
    snapshot : str or None
        The snapshot being (or last) verified or restored.
    done_bytes, total_bytes : int
        Progress of the running step.
    message : str
        One sentence for the owner about the last outcome.
    requested_by : str
        Who started the step.
    moved_aside : pathlib.Path or None
        After a restore: where the replaced data folder was kept.
    """

    phase: Phase = Phase.IDLE
    snapshot: str | None = None
    done_bytes: int = 0
    total_bytes: int = 0
    message: str = ""
    requested_by: str = ""
    moved_aside: Path | None = None

    @property
    def busy(self) -> bool:
        """True while a step runs."""
        return self.phase in BUSY

    @property
    def percent(self) -> int:
        """Progress of the running step, 0 to 100."""
        if self.total_bytes <= 0:
            return 0
        return min(100, self.done_bytes * 100 // self.total_bytes)


class RestoreWizard:
    """Verify and restore snapshots of one backup folder into one data folder.

    Parameters
    ----------
    data_dir : pathlib.Path
        The data folder the appliance serves.
    target : pathlib.Path or None
        The backup folder; None when backups are off (nothing to restore).
    switch : callable
        See :data:`Switch`; the appliance's way to swap folders and go on.
    """

    def __init__(self, data_dir: Path, target: Path | None, switch: Switch) -> None:
        self.data_dir = data_dir
        self.target = target
        self._switch = switch
        self._lock = threading.Lock()
        self._status = RestoreStatus()
        self._thread: threading.Thread | None = None

    def snapshots(self) -> list[Snapshot]:
        """Return the complete snapshots, newest first; none if unreachable."""
        if self.target is None or not self.target.is_dir():
            return []
        try:
            return list(reversed(list_snapshots(self.target)))
        except OSError:
            return []

    def status(self) -> RestoreStatus:
        """Return where the wizard stands."""
        with self._lock:
            return self._status

    def start_verify(self, name: str, requested_by: str) -> None:
        """Start hashing every file of snapshot `name` against its manifest.

        Raises
        ------
        RestoreBusyError
            If a step is already running.
        backup.errors.SnapshotNotFoundError
            If the backup folder holds no complete snapshot `name`.
        """
        snapshot = self._find(name)
        self._begin(Phase.VERIFYING, snapshot, requested_by, self._verify)

    def start_restore(self, name: str, requested_by: str) -> None:
        """Start restoring snapshot `name`, which must have just been verified.

        Raises
        ------
        RestoreBusyError
            If a step is already running.
        NotVerifiedError
            If `name` is not the snapshot last verified without fault.
        backup.errors.SnapshotNotFoundError
            If the backup folder holds no complete snapshot `name`.
        """
        snapshot = self._find(name)
        with self._lock:
            current = self._status
        if current.phase != Phase.VERIFIED or current.snapshot != snapshot.name:
            raise NotVerifiedError(
                f"snapshot {snapshot.name} must be verified first, just before "
                "restoring it"
            )
        self._begin(Phase.COPYING, snapshot, requested_by, self._restore)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the running step to end (for tests and for stopping)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _find(self, name: str) -> Snapshot:
        # Only a complete snapshot's bare name, never a path from the web.
        if self.target is None:
            raise BackupError("backups are off: no backup folder is set")
        for snapshot in self.snapshots():
            if snapshot.name == name:
                return snapshot
        raise SnapshotNotFoundError(f"no complete snapshot {name!r} in {self.target}")

    def _begin(
        self,
        phase: Phase,
        snapshot: Snapshot,
        requested_by: str,
        work: Callable[[Snapshot], None],
    ) -> None:
        with self._lock:
            if self._status.busy:
                raise RestoreBusyError(
                    f"the wizard is busy ({self._status.phase}); wait for it"
                )
            self._status = RestoreStatus(
                phase, snapshot.name, 0, snapshot.bytes, "", requested_by
            )
            self._thread = threading.Thread(
                target=self._run, args=(work, snapshot), name="restore", daemon=True
            )
            self._thread.start()

    def _run(self, work: Callable[[Snapshot], None], snapshot: Snapshot) -> None:
        try:
            work(snapshot)
        except Exception as exc:
            logger.exception("The restore wizard failed on snapshot %s", snapshot.name)
            self._update(phase=Phase.FAILED, message=_sentence(exc))

    def _verify(self, snapshot: Snapshot) -> None:
        clock = time.monotonic()
        report = verify_snapshot(snapshot.path, deep=True, progress=self._progress)
        seconds = time.monotonic() - clock
        if report.ok:
            logger.info("Verified snapshot %s in %.1f s", snapshot.name, seconds)
            self._update(
                phase=Phase.VERIFIED,
                message=f"Every file of {snapshot.name} matches its recorded hash "
                f"({human_bytes(snapshot.bytes)}, checked in {seconds:.0f} s).",
            )
            return
        logger.error("Snapshot %s failed verification", snapshot.name)
        self._update(
            phase=Phase.DAMAGED,
            message=f"{_sentence(report.summary())} Do not restore it; "
            "choose another snapshot.",
        )

    def _restore(self, snapshot: Snapshot) -> None:
        clock = time.monotonic()
        with TargetLock(snapshot.path.parent, shared=True):
            staged = stage(snapshot, self.data_dir, progress=self._progress)
        self._update(phase=Phase.SWITCHING)
        logger.info("Copied snapshot %s; switching the data folder", snapshot.name)

        moved = self._switch(staged)
        seconds = time.monotonic() - clock
        kept = f" The replaced data is kept in {moved}." if moved else ""
        self._update(
            phase=Phase.DONE,
            moved_aside=moved,
            message=f"Restored snapshot {snapshot.name} in {seconds:.0f} s and "
            f"serving from it.{kept}",
        )

    def _progress(self, done: int, total: int) -> None:
        self._update(done_bytes=done, total_bytes=total)

    def _update(self, **changes: object) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)  # type: ignore[arg-type]


def _sentence(exc: object) -> str:
    text = str(exc).strip().rstrip(".")
    return f"{text[:1].upper()}{text[1:]}."
