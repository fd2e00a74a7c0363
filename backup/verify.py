"""Verification of a snapshot: complete, listed, sound and (deep) hashed.

A snapshot passes when its ``COMPLETE`` marker is readable, its manifest is
the one the marker names, every listed file exists with its size (and, deep,
its SHA-256), no unlisted file sits in its ``storage/``, and both database
copies pass ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from backup import layout
from backup.databases import integrity_problem
from backup.errors import SnapshotDamagedError
from backup.files import hash_file
from backup.manifest import Entry, Manifest
from backup.snapshots import Snapshot, read_snapshot

MAX_LISTED_PROBLEMS = 50

Progress = Callable[[int, int], None]
"""Called with (bytes checked, bytes to check) as verification goes."""


@dataclass
class VerifyReport:
    """What verification found; ``ok`` when nothing."""

    folder: Path
    deep: bool
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    more_problems: int = 0

    @property
    def ok(self) -> bool:
        """True when the snapshot passed."""
        return not self.problems

    def add(self, problem: str) -> None:
        """Record a problem, keeping the list short."""
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(problem)
        else:
            self.more_problems += 1

    def summary(self) -> str:
        """One line: the verdict and the first problem."""
        if self.ok:
            kind = "hashed" if self.deep else "sizes checked"
            return f"{self.folder.name}: ok ({self.files:,} file(s) {kind})"
        count = len(self.problems) + self.more_problems
        return f"snapshot {self.folder} is damaged: {self.problems[0]}" + (
            f" (and {count - 1} more problems)" if count > 1 else ""
        )


def verify_snapshot(
    folder: Path, *, deep: bool = True, progress: Progress | None = None
) -> VerifyReport:
    """Check a snapshot without changing it.

    Parameters
    ----------
    folder : pathlib.Path
        The snapshot folder.
    deep : bool
        Hash every file (slow on a large archive); otherwise check sizes.
    progress : callable, optional
        Told the bytes checked so far and the total, for a progress bar.

    Returns
    -------
    VerifyReport
    """
    report = VerifyReport(folder, deep)
    snapshot = read_snapshot(folder)
    if snapshot is None or folder.name.endswith(layout.PARTIAL_SUFFIX):
        report.add(f"it is not complete (no readable {layout.COMPLETE} marker)")
        return report
    try:
        manifest = Manifest(folder / layout.MANIFEST)
    except sqlite3.Error as exc:
        report.add(f"its {layout.MANIFEST} cannot be read ({exc})")
        return report
    with manifest:
        _check_manifest(snapshot, manifest, report)
        _check_files(folder, manifest, report, progress)
    _check_databases(folder, report)
    return report


def check_snapshot(
    snapshot: Snapshot, *, deep: bool = True, progress: Progress | None = None
) -> VerifyReport:
    """Verify a snapshot and refuse it if it is damaged.

    Raises
    ------
    SnapshotDamagedError
        With a one-line message naming the first problem.
    """
    report = verify_snapshot(snapshot.path, deep=deep, progress=progress)
    if not report.ok:
        raise SnapshotDamagedError(report.summary())
    return report


def _check_manifest(snapshot: Snapshot, manifest: Manifest, report: VerifyReport):
    if hash_file(manifest.path) != snapshot.manifest_sha256:
        report.add(f"{layout.MANIFEST} is not the one recorded when it completed")
    count, _size = manifest.totals()
    listed = count - sum(1 for name in layout.DATABASES if manifest.lookup(name))
    if listed != snapshot.files:
        report.add(
            f"{layout.MANIFEST} lists {listed} stored files, "
            f"{layout.COMPLETE} says {snapshot.files}"
        )
    if manifest.lookup(layout.APP_DB) is None:
        report.add(f"it holds no {layout.APP_DB}")


def _check_files(
    folder: Path, manifest: Manifest, report: VerifyReport, progress: Progress | None
) -> None:
    _count, total = manifest.totals()
    listed = set()
    for entry in manifest.entries():
        if entry.path.startswith(f"{layout.STORAGE_DIR}/"):
            listed.add(entry.path)
        problem = _file_problem(folder, entry, report.deep)
        if problem:
            report.add(problem)
        report.files += 1
        report.bytes += entry.size
        if progress is not None:
            progress(report.bytes, total)
    for path in _unlisted(folder, listed):
        report.add(f"{path} is not in the manifest")


def _file_problem(folder: Path, entry: Entry, deep: bool) -> str | None:
    path = folder / entry.path
    try:
        size = path.stat().st_size
        if size != entry.size:
            return f"{entry.path} has {size} bytes, the manifest says {entry.size}"
        if deep and hash_file(path) != entry.sha256:
            return f"{entry.path} does not match its SHA-256 in the manifest"
    except FileNotFoundError:
        return f"{entry.path} is missing"
    except OSError as exc:
        return f"{entry.path} cannot be read ({exc.strerror})"
    return None


def _unlisted(folder: Path, listed: set[str]) -> list[str]:
    found = []
    for root, _dirs, files in os.walk(folder / layout.STORAGE_DIR):
        for name in files:
            relative = PurePosixPath(Path(root, name).relative_to(folder)).as_posix()
            if relative not in listed:
                found.append(relative)
    return sorted(found)


def _check_databases(folder: Path, report: VerifyReport) -> None:
    for name in layout.DATABASES:
        if (folder / name).exists():
            problem = integrity_problem(folder / name)
            if problem:
                report.add(f"{name} fails its integrity check ({problem})")
