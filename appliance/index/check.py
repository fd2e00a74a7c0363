"""Checking that the index and ``storage/`` agree, and optionally the content.

The check pairs every index row with its file (see
:mod:`appliance.index.compare`) and reports, without changing anything:

- an indexed file missing from ``storage/``;
- a stored file the index lacks (the next start's reconcile indexes it), or
  a redundant copy of an indexed one (reported, not a problem);
- a file under ``storage/`` not named the way the appliance stores files;
- a size that differs from the index, or a name whose content hash differs
  from the index's;
- with ``deep``, a file whose content no longer hashes to the SHA-256
  recorded at ingest (bit rot, or a file changed by hand).

Every problem is one line, given to a callback as it is found, so the
command line can print it at once and memory stays flat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from appliance.index.compare import (
    IndexedFile,
    Pair,
    compare,
    count_rows,
    indexed_copy,
    is_indexed,
)
from appliance.index.crawl import ForeignFile, StoredFile
from appliance.progress import Progress
from appliance.storage import Storage, hash_file

logger = logging.getLogger(__name__)

PROBLEM_SAMPLE = 50
PROBLEM_KINDS = (
    "missing_files",
    "unindexed_files",
    "foreign_files",
    "size_mismatches",
    "hash_mismatches",
)

ProblemSink = Callable[[str], None]


@dataclass
class CheckReport:
    """The outcome of one check."""

    deep: bool
    started_at: str = ""
    finished_at: str = ""
    files: int = 0
    rows: int = 0
    redundant_copies: int = 0
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(PROBLEM_KINDS, 0)
    )
    problems: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        """True when the check ran and found no problem."""
        return not self.error and not any(self.counts.values())

    def add_problem(self, kind: str, line: str) -> None:
        """Count a problem; the first few lines are kept for the record."""
        self.counts[kind] += 1
        if len(self.problems) < PROBLEM_SAMPLE:
            self.problems.append(line)


def run_check(
    storage: Storage,
    index_path: Path,
    *,
    deep: bool = False,
    progress: Progress | None = None,
    on_problem: ProblemSink | None = None,
    cancel: threading.Event | None = None,
) -> CheckReport:
    """Compare the index with storage; with `deep`, re-hash every file.

    Parameters
    ----------
    storage : Storage
        The data folder's storage.
    index_path : pathlib.Path
        The ``index.db`` to check; only read.
    deep : bool
        Also re-hash every stored file.
    progress : Progress, optional
        Advanced once per stored file, towards the number of index rows.
    on_problem : callable, optional
        Called with each problem's line as it is found; without it, each
        problem is logged.
    cancel : threading.Event, optional
        Set it to stop the check early; the report then carries an error.

    Returns
    -------
    CheckReport
        With :attr:`CheckReport.error` set if the index could not be read.
    """
    report = CheckReport(deep=deep, started_at=_now())
    checker = _Checker(storage, index_path, report, on_problem)
    try:
        if progress is not None:
            progress.restart(total=count_rows(index_path))
        for item in compare(storage, index_path):
            if cancel is not None and cancel.is_set():
                raise InterruptedError("stopped before the end")
            checker.look_at(item)
            if progress is not None:
                progress.advance()
    except InterruptedError as exc:
        report.error = f"the check was stopped: {exc}"
    except Exception as exc:
        logger.exception("The check could not finish")
        report.error = f"the check could not finish: {exc}"
    report.finished_at = _now()
    return report


class _Checker:
    def __init__(
        self,
        storage: Storage,
        index_path: Path,
        report: CheckReport,
        on_problem: ProblemSink | None,
    ) -> None:
        self.storage = storage
        self.index_path = index_path
        self.report = report
        self.on_problem = on_problem

    def look_at(self, item: Pair | ForeignFile) -> None:
        if isinstance(item, ForeignFile):
            self._problem("foreign_files", f"not a stored file: {item.relative}")
            return
        if item.stored is not None:
            self.report.files += 1
        if item.indexed is not None:
            self.report.rows += 1

        if item.stored is not None and item.indexed is not None:
            self._compare(item.stored, item.indexed)
        elif item.stored is not None:
            self._unindexed(item.stored)
        elif item.indexed is not None:
            self._missing(item.indexed)

    def _compare(self, stored: StoredFile, indexed: IndexedFile) -> None:
        path = stored.relative
        if stored.size != indexed.file_size:
            self._problem(
                "size_mismatches",
                f"size differs: {path} is {stored.size} bytes, the index says "
                f"{indexed.file_size}",
            )
        if stored.name.sha256 != indexed.sha256:
            self._problem(
                "hash_mismatches", f"name and index disagree on the hash: {path}"
            )
        elif self.report.deep:
            self._rehash(stored, indexed.sha256)

    def _unindexed(self, stored: StoredFile) -> None:
        # Stored during the check, or a second copy of an indexed file?
        if is_indexed(self.index_path, stored.relative):
            self.report.rows += 1
            return
        name = stored.name
        copy_of = indexed_copy(self.index_path, name.sop_instance_uid, name.sha256)
        if copy_of is not None:
            self.report.redundant_copies += 1
            logger.info("%s is a redundant copy of %s", stored.relative, copy_of)
            return
        self._problem("unindexed_files", f"stored but not indexed: {stored.relative}")
        if self.report.deep:
            self._rehash(stored, name.sha256)

    def _missing(self, indexed: IndexedFile) -> None:
        # Stored just after the walk passed its folder: not missing.
        if self.storage.absolute(indexed.file_path).exists():
            self.report.files += 1
            return
        self._problem(
            "missing_files",
            f"indexed but missing: {indexed.file_path} "
            f"(SOP Instance UID {indexed.sop_uid})",
        )

    def _rehash(self, stored: StoredFile, expected: str) -> None:
        try:
            actual = hash_file(stored.path)
        except OSError as exc:
            self._problem("hash_mismatches", f"cannot read {stored.relative}: {exc}")
            return
        if actual != expected:
            self._problem(
                "hash_mismatches",
                f"content changed since ingest: {stored.relative}",
            )

    def _problem(self, kind: str, line: str) -> None:
        self.report.add_problem(kind, line)
        if self.on_problem is None:
            logger.warning("Check: %s", line)
        else:
            self.on_problem(line)


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")
