"""``python -m backup run``: one backup, in a process of its own.

The serving process starts its nightly and "Back up now" runs this way
(:mod:`backup.job`): the copy, the hashing and the hardlinking then compete
with the DICOM listener for neither Python's interpreter lock nor, with
``--idle``, the processor. The run records itself in the history in
``app.db``; with ``--json`` it prints its result as one JSON object on
standard output for its parent. SIGTERM cancels it cleanly (the unfinished
snapshot is removed and the cancellation recorded).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from backup import layout
from backup.engine import BackupOptions, BackupResult, run_backup
from backup.history import record_run
from backup.retention import Retention

logger = logging.getLogger(__name__)

EXIT_FAILED = 1


def add_run_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``run`` to ``python -m backup``."""
    run = commands.add_parser("run", help="back up a data folder now")
    run.add_argument("--data-dir", type=Path, required=True)
    run.add_argument("--target", type=Path, required=True, help="backup folder")
    defaults = Retention()
    run.add_argument("--keep-daily", type=int, default=defaults.daily)
    run.add_argument("--keep-weekly", type=int, default=defaults.weekly)
    run.add_argument("--keep-monthly", type=int, default=defaults.monthly)
    run.add_argument("--trigger", default="command", help="recorded as who asked")
    run.add_argument("--verify-all", action="store_true", help="read every copy back")
    run.add_argument("--nice", type=int, default=0, help="lower the CPU priority")
    run.add_argument(
        "--idle", action="store_true", help="use only processor time nobody else wants"
    )
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run one backup as the command line asked; 0 when it completed."""
    if args.nice:
        os.nice(args.nice)
    if args.idle and run_when_idle():
        logger.info("The backup runs at idle CPU priority")
    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    options = BackupOptions(
        args.data_dir,
        args.target,
        Retention(args.keep_daily, args.keep_weekly, args.keep_monthly),
        args.trigger,
        cancel,
        args.verify_all,
    )
    result = run_and_record(options)
    if args.json:
        print(to_json(result), flush=True)
    return 0 if result.ok else EXIT_FAILED


def run_when_idle() -> bool:
    """Put this process in Linux's idle scheduling class; True if it now is.

    A process in that class gets the processor only when no ordinary one
    wants it, so the DICOM listener answers as fast during a backup as
    without one on two cores (``bench/backup.py``: the median C-STORE 1.31x
    slower during a backup, against 1.40x at nice 10 alone). Threads started
    later inherit the class. The price: a processor kept busy by something
    else all the time would hold the backup back just as long; the
    appliance's own work comes in bursts (a study, a page). Where the class
    does not exist or is refused, the nice value alone lowers the priority.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return os.sched_getscheduler(0) == os.SCHED_IDLE
    except (AttributeError, OSError):
        return False


def run_and_record(options: BackupOptions) -> BackupResult:
    """Back up, then add the run to the data folder's history.

    A run that did not start because another one ran is not recorded.
    """
    result = run_backup(options)
    app_db = options.data_dir / layout.APP_DB
    if not result.busy and app_db.exists():
        record_run(app_db, result)
    return result


def to_json(result: BackupResult) -> str:
    """Return a result as one line of JSON."""
    return json.dumps(dataclasses.asdict(result), default=_encode)


def from_json(text: str) -> BackupResult:
    """Return the result that :func:`to_json` wrote.

    Raises
    ------
    ValueError
        If `text` is not such a result.
    """
    try:
        fields: dict[str, Any] = json.loads(text)
        for key in ("started_at", "finished_at"):
            fields[key] = datetime.fromisoformat(fields[key])
        for key in ("removed", "problems"):
            fields[key] = tuple(fields[key])
        return BackupResult(**fields)
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a backup result: {text[:200]!r}") from exc


def _encode(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {value!r}")
