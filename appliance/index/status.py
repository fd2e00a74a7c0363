"""Where a rebuild stands, for the web, the health probe and the command line.

One :class:`RebuildStatus` lives as long as the serving process. The thread
that rebuilds updates it; anyone may read :meth:`RebuildStatus.snapshot`, a
plain dict (JSON-able) without patient data: states, counts and times.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from appliance.index.queries import IndexCounts
from appliance.progress import Progress

UNREADABLE_SAMPLE = 20


class RebuildState(enum.Enum):
    """The steps of a rebuild, and how it ended."""

    IDLE = "idle"
    SCANNING = "scanning"
    INDEXING = "indexing"
    SWAPPING = "swapping"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def running(self) -> bool:
        """Whether a rebuild in this state is still going."""
        return self in (self.SCANNING, self.INDEXING, self.SWAPPING)


@dataclass(frozen=True)
class RebuildSummary:
    """What a finished rebuild put in the new index, and what it left out."""

    files: int
    instances: int
    series: int
    studies: int
    patients: int
    conflicts: int
    unreadable: int
    redundant: int
    seconds: float


class RebuildStatus:
    """Thread-safe state, progress and outcome of the latest rebuild."""

    def __init__(self) -> None:
        self.progress = Progress()
        self._lock = threading.Lock()
        self._state = RebuildState.IDLE
        self._reason = ""
        self._request_id = ""
        self._report = ""
        self._started_at = ""
        self._finished_at = ""
        self._started = time.monotonic()
        self._unreadable = 0
        self._unreadable_sample: list[str] = []
        self._redundant = 0
        self._summary: RebuildSummary | None = None
        self._error = ""

    @property
    def state(self) -> RebuildState:
        """The current state."""
        with self._lock:
            return self._state

    def begin(
        self, reason: str, request_id: str = "", report: Path | None = None
    ) -> None:
        """Start a new rebuild's record, forgetting the previous one."""
        with self._lock:
            self._state = RebuildState.SCANNING
            self._reason, self._request_id = reason, request_id
            self._report = str(report or "")
            self._started_at = _now()
            self._finished_at = self._error = ""
            self._started = time.monotonic()
            self._unreadable, self._unreadable_sample = 0, []
            self._redundant = 0
            self._summary = None
        self.progress.restart()

    def set_state(self, state: RebuildState) -> None:
        """Move to another step."""
        with self._lock:
            self._state = state

    def count_unreadable(self, relative: str) -> None:
        """Count one unreadable file; the first few paths are kept."""
        with self._lock:
            self._unreadable += 1
            if len(self._unreadable_sample) < UNREADABLE_SAMPLE:
                self._unreadable_sample.append(relative)

    def count_redundant(self) -> None:
        """Count one file whose identical content is already indexed."""
        with self._lock:
            self._redundant += 1

    def summarise(self, counts: IndexCounts) -> RebuildSummary:
        """Return the summary of a rebuild whose new index holds `counts`."""
        with self._lock:
            return RebuildSummary(
                files=self.progress.view().total or 0,
                instances=counts.instances,
                series=counts.series,
                studies=counts.studies,
                patients=counts.patients,
                conflicts=counts.conflicts,
                unreadable=self._unreadable,
                redundant=self._redundant,
                seconds=time.monotonic() - self._started,
            )

    def end(
        self,
        state: RebuildState,
        summary: RebuildSummary | None = None,
        error: str = "",
    ) -> None:
        """Record how the rebuild ended."""
        with self._lock:
            self._state, self._summary, self._error = state, summary, error
            self._finished_at = _now()

    def snapshot(self) -> dict[str, Any]:
        """Return the status as a JSON-able dict, without patient data."""
        view = self.progress.view()
        with self._lock:
            return {
                "state": self._state.value,
                "running": self._state.running,
                "reason": self._reason,
                "request_id": self._request_id,
                "started_at": self._started_at,
                "finished_at": self._finished_at,
                "elapsed": round(view.seconds, 1),
                "done": view.done,
                "total": view.total,
                "rate": round(view.rate, 1),
                "seconds_left": view.seconds_left,
                "unreadable": self._unreadable,
                "unreadable_sample": list(self._unreadable_sample),
                "unreadable_report": self._report,
                "redundant": self._redundant,
                "summary": asdict(self._summary) if self._summary else None,
                "error": self._error,
            }


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")
