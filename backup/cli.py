"""``python -m backup``: list, verify and restore without the appliance.

::

    python -m backup list TARGET
    python -m backup verify SNAPSHOT [--quick]
    python -m backup restore SNAPSHOT --data-dir DIR
    python -m backup run --data-dir DIR --target TARGET [--keep-daily N ...]

This needs nothing but Python and this folder, so that a machine on which
the appliance no longer starts can still be restored. ``appliance backup``
and ``appliance restore`` call the same functions. A failure ends the
command with one line on stderr and exit status 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from backup.errors import BackupError
from backup.restore import RestoreResult, restore_snapshot
from backup.runner import add_run_command
from backup.snapshots import Snapshot, find_snapshot, list_snapshots
from backup.target import human_bytes
from backup.verify import verify_snapshot

EXIT_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m backup``; return its exit status."""
    args = _parser().parse_args(argv)
    # Under systemd, journald stamps each line; elsewhere we add the time.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(
        level=logging.INFO,
        format=f"{stamp}%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.run(args))
    except (BackupError, OSError) as exc:
        print(f"backup: {exc}", file=sys.stderr)
        return EXIT_FAILED


def print_snapshots(snapshots: Sequence[Snapshot]) -> None:
    """Print one line per snapshot, oldest first."""
    for snapshot in snapshots:
        print(describe(snapshot))


def describe(snapshot: Snapshot) -> str:
    """One line about a snapshot: name, time, studies, files and size."""
    studies = "?" if snapshot.studies is None else f"{snapshot.studies:,}"
    return (
        f"{snapshot.name}  {snapshot.finished_at:%Y-%m-%d %H:%M}  "
        f"{studies} studies  {snapshot.files:,} files  "
        f"{human_bytes(snapshot.bytes)} ({human_bytes(snapshot.copied_bytes)} new)"
    )


def verify_command(
    reference: str, target: Path | None, quick: bool, prog: str = "backup"
) -> int:
    """Verify a snapshot and print the verdict; 0 when it passes.

    A damaged snapshot's first problem goes to stderr as ``PROG: ...``, the
    others before it, one a line.
    """
    snapshot_dir = _folder_of(reference, target)
    report = verify_snapshot(snapshot_dir, deep=not quick)
    for problem in report.problems[1:]:
        print(f"  {problem}", file=sys.stderr)
    if not report.ok:
        print(f"{prog}: {report.summary()}", file=sys.stderr)
        return EXIT_FAILED
    print(report.summary())
    return 0


def report_restore(result: RestoreResult) -> None:
    """Print what a restore did."""
    print(
        f"Restored {result.snapshot} into {result.data_dir}: {result.files:,} files, "
        f"{human_bytes(result.bytes)} in {result.seconds:.0f} s."
    )
    if result.moved_aside is not None:
        print(f"The data folder it replaced is kept in {result.moved_aside}.")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backup",
        description="List, verify and restore appliance backups.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="show the complete snapshots")
    listing.add_argument("target", type=Path, help="the backup folder")
    listing.set_defaults(run=lambda a: _list(a.target))

    verify = commands.add_parser("verify", help="check a snapshot")
    verify.add_argument("snapshot", help="a snapshot folder")
    verify.add_argument("--quick", action="store_true", help="sizes, not hashes")
    verify.set_defaults(run=lambda a: verify_command(a.snapshot, None, a.quick))

    restore = commands.add_parser("restore", help="restore into a data folder")
    restore.add_argument("snapshot", help="a snapshot folder")
    restore.add_argument("--data-dir", type=Path, required=True)
    restore.set_defaults(run=_restore)

    add_run_command(commands)
    return parser


def _list(target: Path) -> int:
    snapshots = list_snapshots(target)
    if not snapshots:
        print(f"No complete snapshot in {target}.")
    print_snapshots(snapshots)
    return 0


def _restore(args: argparse.Namespace) -> int:
    report_restore(restore_snapshot(args.snapshot, args.data_dir))
    return 0


def _folder_of(reference: str, target: Path | None) -> Path:
    # A folder that is not a complete snapshot is still verified, to say why.
    path = Path(reference).expanduser()
    if path.is_dir():
        return path
    if target is not None and (target / reference).is_dir():
        return target / reference
    return find_snapshot(reference, target).path
