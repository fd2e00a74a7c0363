"""Snapshot folders in a backup folder: naming, listing, completing, removing.

A snapshot counts only once it is complete: its folder has a final name (no
``.partial`` or ``.deleting`` suffix) and holds a readable ``COMPLETE``
marker. Everything else is ignored by listing, never used as the base of an
incremental run, and never counted by retention.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from backup import layout
from backup.errors import SnapshotDamagedError, SnapshotNotFoundError
from backup.files import fsync_path, remove_tree

LATEST = "latest"


@dataclass(frozen=True)
class Snapshot:
    """A complete snapshot, as its ``COMPLETE`` marker describes it."""

    name: str
    path: Path
    started_at: datetime
    finished_at: datetime
    files: int
    bytes: int
    copied_files: int
    copied_bytes: int
    studies: int | None
    instances: int | None
    manifest_sha256: str
    previous: str | None
    source: str


def read_snapshot(folder: Path) -> Snapshot | None:
    """Return the snapshot in `folder`, or None if it is not complete."""
    if not layout.is_snapshot_name(folder.name):
        return None
    try:
        info = json.loads((folder / layout.COMPLETE).read_text(encoding="utf-8"))
        return Snapshot(
            name=folder.name,
            path=folder,
            started_at=datetime.fromisoformat(info["started_at"]),
            finished_at=datetime.fromisoformat(info["finished_at"]),
            files=int(info["files"]),
            bytes=int(info["bytes"]),
            copied_files=int(info["copied_files"]),
            copied_bytes=int(info["copied_bytes"]),
            studies=info.get("studies"),
            instances=info.get("instances"),
            manifest_sha256=str(info["manifest_sha256"]),
            previous=info.get("previous"),
            source=str(info.get("source", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_snapshots(target: Path) -> list[Snapshot]:
    """Return the complete snapshots in `target`, oldest first.

    Raises
    ------
    OSError
        If `target` cannot be read.
    """
    found = []
    for entry in os.scandir(target):
        if entry.is_dir(follow_symlinks=False):
            snapshot = read_snapshot(Path(entry.path))
            if snapshot is not None:
                found.append(snapshot)
    return sorted(found, key=lambda s: (s.started_at, s.name))


def find_snapshot(reference: str | Path, target: Path | None = None) -> Snapshot:
    """Return the complete snapshot a person named.

    Parameters
    ----------
    reference : str or pathlib.Path
        A snapshot folder's path, a snapshot's name in `target`, or
        ``latest`` for the newest complete snapshot in `target`.
    target : pathlib.Path, optional
        The backup folder that names are looked up in.

    Raises
    ------
    SnapshotNotFoundError
        If nothing by that name or path exists.
    SnapshotDamagedError
        If the folder exists but is not a complete snapshot.
    """
    folder = _locate(str(reference), target)
    snapshot = read_snapshot(folder)
    if snapshot is None:
        raise SnapshotDamagedError(
            f"{folder} is not a complete snapshot (its {layout.COMPLETE} marker "
            "is missing or unreadable); it cannot be used"
        )
    return snapshot


def new_name(target: Path, started_at: datetime) -> str:
    """Return a snapshot name for a run started at `started_at`, unused in `target`."""
    base = started_at.strftime(layout.NAME_FORMAT)
    name, number = base, 1
    while any(
        (target / f"{name}{suffix}").exists()
        for suffix in ("", layout.PARTIAL_SUFFIX, layout.DELETING_SUFFIX)
    ):
        number += 1
        name = f"{base}-{number}"
    return name


def complete(partial: Path, info: dict[str, Any]) -> Path:
    """Write the ``COMPLETE`` marker, then give the folder its final name.

    Parameters
    ----------
    partial : pathlib.Path
        The verified snapshot, still named ``<name>.partial``.
    info : dict
        What the marker records (see :class:`Snapshot`).

    Returns
    -------
    pathlib.Path
        The snapshot's final folder.
    """
    marker = partial / layout.COMPLETE
    temporary = marker.with_suffix(".tmp")
    payload = {"format": layout.FORMAT_VERSION, "host": socket.gethostname(), **info}
    temporary.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    fsync_path(temporary)
    os.replace(temporary, marker)
    fsync_path(partial)

    final = partial.with_name(partial.name.removesuffix(layout.PARTIAL_SUFFIX))
    os.rename(partial, final)
    fsync_path(final.parent)
    return final


def remove(snapshot_dir: Path) -> None:
    """Remove a snapshot: first its name changes, so that it never half-counts."""
    doomed = snapshot_dir.with_name(snapshot_dir.name + layout.DELETING_SUFFIX)
    os.rename(snapshot_dir, doomed)
    fsync_path(doomed.parent)
    remove_tree(doomed)


def discard_leftovers(target: Path) -> list[str]:
    """Remove the remains of torn runs and deletions; return their names."""
    removed = []
    for entry in os.scandir(target):
        leftover = entry.name.endswith((layout.PARTIAL_SUFFIX, layout.DELETING_SUFFIX))
        if leftover and entry.is_dir(follow_symlinks=False):
            remove_tree(Path(entry.path))
            removed.append(entry.name)
    return removed


def _locate(reference: str, target: Path | None) -> Path:
    if reference == LATEST:
        if target is None:
            raise SnapshotNotFoundError("no backup folder is set: name a snapshot path")
        try:
            snapshots = list_snapshots(target)
        except OSError as exc:
            raise SnapshotNotFoundError(f"cannot read {target}: {exc}") from exc
        if not snapshots:
            raise SnapshotNotFoundError(f"there is no complete snapshot in {target}")
        return snapshots[-1].path

    path = Path(reference).expanduser()
    if path.is_dir():
        return path
    if target is not None and (target / reference).is_dir():
        return target / reference
    where = f" in {target}" if target is not None and os.sep not in reference else ""
    raise SnapshotNotFoundError(f"no snapshot {reference}{where}")
