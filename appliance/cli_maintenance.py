"""The ``appliance rebuild-index`` and ``appliance check`` commands.

::

    appliance rebuild-index      rebuild index.db from the stored files
    appliance check [--deep]     compare index and storage; --deep re-hashes

``rebuild-index`` works whether or not the service runs. When it runs, the
command asks it to rebuild (through ``DATA_DIR/maintenance/``) so that the
listener keeps receiving, and follows the progress; otherwise the command
rebuilds itself, holding the data folder's lock so that ``serve`` waits.
Progress goes to stderr: a bar on a terminal, a log line every ten seconds
otherwise. ``check`` also verifies the audit trail's hash chain, and exits 1 when it
finds a problem in either.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.config import Settings
from appliance.datalock import holder
from appliance.index import IndexWriter
from appliance.index.check import CheckReport, run_check
from appliance.maintenance import (
    REQUEST_NAME,
    STATUS_NAME,
    IndexKeeper,
    record_report,
    work_dir,
)
from appliance.progress import Progress, ProgressPrinter, ProgressView
from appliance.service import DataPaths, prepare_state
from appliance.state.audit_chain import ChainReport, verify_chain
from appliance.storage import Storage

EXIT_PROBLEMS = 1
REQUEST_TIMEOUT = 30.0
TTY_REDRAW = 0.2
LOG_POLL = 1.0

Snapshot = dict[str, Any]


def add_maintenance_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``rebuild-index`` and ``check`` to the ``appliance`` command."""
    rebuild = commands.add_parser(
        "rebuild-index", help="rebuild index.db from the stored files"
    )
    rebuild.set_defaults(run=rebuild_index)

    check = commands.add_parser("check", help="compare the index with the files")
    check.add_argument(
        "--deep", action="store_true", help="also re-hash every stored file"
    )
    check.set_defaults(run=check_index)


def rebuild_index(settings: Settings, _args: argparse.Namespace) -> int:
    """Rebuild the index, here or in the running service; 0 when done."""
    running = holder(settings.data_dir)
    if running and running.startswith("appliance serve"):
        final = _rebuild_in_service(settings.data_dir, running)
    else:
        final = _rebuild_here(settings)
    if final is None:
        return EXIT_PROBLEMS
    _print_summary(final)
    return 0 if final["state"] == "done" else EXIT_PROBLEMS


def check_index(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``appliance check``; 0 when index and storage agree.

    The audit trail's hash chain is verified first; a broken chain (a row
    edited or deleted) also makes the command exit 1.
    """
    paths = DataPaths(settings.data_dir)
    chain = _check_audit_chain(paths)
    status = _read_status(work_dir(settings.data_dir))
    if holder(settings.data_dir) and status and status.get("running"):
        print("appliance: a rebuild is running; check after it ends", file=sys.stderr)
        return EXIT_PROBLEMS
    if not paths.index_db.exists():
        print(f"appliance: there is no {paths.index_db}", file=sys.stderr)
        return EXIT_PROBLEMS

    printer = ProgressPrinter("files")
    progress = Progress()
    reports: list[CheckReport] = []

    def work() -> None:
        reports.append(
            run_check(
                Storage(settings.data_dir),
                paths.index_db,
                deep=args.deep,
                progress=progress,
                on_problem=printer.message,
            )
        )

    _run_showing(work, lambda: (progress.view(), "checking"), printer)
    report = reports[0]
    prepare_state(paths)
    record_report(paths.app_db, report, "command")
    print(_check_summary(report))
    return 0 if report.ok and chain.ok else EXIT_PROBLEMS


def _rebuild_here(settings: Settings) -> Snapshot:
    paths = DataPaths(settings.data_dir)
    storage = Storage(settings.data_dir)
    storage.prepare()
    writer = IndexWriter(paths.index_db)
    keeper = IndexKeeper(
        settings.data_dir,
        paths.index_db,
        paths.app_db,
        storage,
        writer,
        role="appliance rebuild-index",
    )
    keeper.prepare()
    try:
        prepare_state(paths)
        writer.start()
        try:
            printer = ProgressPrinter("files")
            _run_showing(
                lambda: keeper.rebuild("requested by appliance rebuild-index"),
                lambda: _view(keeper.status.snapshot()),
                printer,
            )
        finally:
            writer.stop()
    finally:
        keeper.unlock()
    return keeper.status.snapshot()


def _rebuild_in_service(data_dir: Path, running: str) -> Snapshot | None:
    folder = work_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    request_id = uuid.uuid4().hex
    temporary = folder / f"{REQUEST_NAME}.tmp"
    temporary.write_text(request_id, encoding="utf-8")
    os.replace(temporary, folder / REQUEST_NAME)
    print(
        f"Asked the running service ({running}) to rebuild the index; "
        "it keeps receiving meanwhile.",
        file=sys.stderr,
    )

    printer = ProgressPrinter("files")
    deadline = time.monotonic() + REQUEST_TIMEOUT
    while True:
        status = _read_status(folder)
        ours = status is not None and status.get("request_id") == request_id
        if ours and status is not None and not status["running"]:
            printer.close()
            return status
        if ours and status is not None:
            printer.show(*_view(status))
        elif status is not None and status.get("running"):
            deadline = time.monotonic() + REQUEST_TIMEOUT
        elif time.monotonic() > deadline:
            print(
                f"appliance: the service did not take the request in "
                f"{REQUEST_TIMEOUT:.0f} s",
                file=sys.stderr,
            )
            return None
        time.sleep(TTY_REDRAW if printer.is_tty else LOG_POLL)


def _run_showing(
    work: Callable[[], None],
    view: Callable[[], tuple[ProgressView, str]],
    printer: ProgressPrinter,
) -> None:
    """Run `work` on a thread and show its progress until it ends."""
    thread = threading.Thread(target=work, name="maintenance", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            printer.show(*view())
            thread.join(TTY_REDRAW if printer.is_tty else LOG_POLL)
    finally:
        printer.close()


def _view(status: Snapshot) -> tuple[ProgressView, str]:
    view = ProgressView(status["done"], status["total"], status["elapsed"])
    return view, status["state"]


def _read_status(folder: Path) -> Snapshot | None:
    try:
        status: Snapshot = json.loads((folder / STATUS_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return status


def _print_summary(status: Snapshot) -> None:
    summary = status.get("summary")
    if status["state"] != "done" or not summary:
        print(f"The rebuild did not complete ({status['state']}): {status['error']}")
        print("The index in use was not changed.")
        return
    print(
        f"Rebuilt the index from {summary['files']:,} files in "
        f"{summary['seconds']:.0f} s: {summary['instances']:,} instances, "
        f"{summary['series']:,} series, {summary['studies']:,} studies, "
        f"{summary['patients']:,} patients ({summary['conflicts']:,} identity "
        "conflicts to review)."
    )
    if summary["redundant"]:
        print(f"{summary['redundant']:,} redundant copies left in place.")
    print(f"Unreadable files, left in place: {summary['unreadable']:,}")
    if summary["unreadable"]:
        with open(status["unreadable_report"], encoding="utf-8") as report:
            for line in report:
                path, _, reason = line.rstrip("\n").partition("\t")
                print(f"  {path}: {reason}")


def _check_audit_chain(paths: DataPaths) -> ChainReport:
    # Migrated first: an app.db from before the chain gets its hashes.
    if not paths.app_db.exists():
        print(f"Audit trail: there is no {paths.app_db} yet.")
        return ChainReport()
    prepare_state(paths)
    chain = verify_chain(paths.app_db)
    print(_chain_summary(chain))
    return chain


def _chain_summary(chain: ChainReport) -> str:
    if chain.ok:
        return f"Audit trail: {chain.rows:,} entries, hash chain intact."
    lines = [
        f"Audit trail: {chain.problem_count} problem(s) in {chain.rows:,} entries;"
        " it was changed outside the appliance:",
        *(f"  {line}" for line in chain.problems),
    ]
    return "\n".join(lines)


def _check_summary(report: CheckReport) -> str:
    if report.error:
        return f"Check did not finish: {report.error}"
    kind = "deep check (content re-hashed)" if report.deep else "check"
    found = [
        f"{count} {name.replace('_', ' ')}"
        for name, count in report.counts.items()
        if count
    ]
    verdict = f"problems: {', '.join(found)}" if found else "no problem found"
    if report.redundant_copies:
        verdict += f"; {report.redundant_copies} redundant copies"
    return (
        f"The {kind} compared {report.files:,} files with {report.rows:,} index "
        f"rows: {verdict}."
    )
