"""Progress of a long task: count, rate and time left, shown on a terminal.

A :class:`Progress` is updated by the thread doing the work and read by any
other (the web's health, the command line's display). :class:`ProgressPrinter`
draws it on stderr: a bar redrawn in place on a terminal, or one log line
every so often when stderr is a file or the journal.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import TextIO

logger = logging.getLogger(__name__)

BAR_WIDTH = 30


@dataclass(frozen=True)
class ProgressView:
    """One consistent reading of a :class:`Progress`."""

    done: int
    total: int | None
    seconds: float

    @property
    def rate(self) -> float:
        """Items per second so far (0 before the first second)."""
        return self.done / self.seconds if self.seconds >= 1 else 0.0

    @property
    def seconds_left(self) -> float | None:
        """Estimated seconds to go, or None when it cannot be told yet."""
        if self.total is None or self.rate <= 0:
            return None
        return max(self.total - self.done, 0) / self.rate


class Progress:
    """Thread-safe counter of items done out of an optional total."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = 0
        self._total: int | None = None
        self._started = time.monotonic()

    def restart(self, total: int | None = None) -> None:
        """Start counting again from zero, now, towards `total`."""
        with self._lock:
            self._done, self._total = 0, total
            self._started = time.monotonic()

    def advance(self, count: int = 1) -> None:
        """Count `count` more items done."""
        with self._lock:
            self._done += count

    def view(self) -> ProgressView:
        """Return the current count, total and elapsed time together."""
        with self._lock:
            return ProgressView(
                self._done, self._total, time.monotonic() - self._started
            )


def describe(view: ProgressView, unit: str) -> str:
    """Return e.g. ``"1,234/10,000 files  512/s  2m 10s left"``."""
    total = "?" if view.total is None else f"{view.total:,}"
    left = view.seconds_left
    eta = "time left unknown" if left is None else f"{_duration(left)} left"
    return f"{view.done:,}/{total} {unit}  {view.rate:,.0f}/s  {eta}"


class ProgressPrinter:
    """Show a progress on stderr while a task runs.

    Parameters
    ----------
    unit : str
        What is counted, e.g. ``"files"``.
    stream : TextIO, optional
        Where to draw; stderr by default.
    log_every : float
        Seconds between log lines when the stream is not a terminal.
    """

    def __init__(
        self, unit: str, stream: TextIO | None = None, log_every: float = 10.0
    ) -> None:
        self.unit = unit
        self.stream = stream or sys.stderr
        self.is_tty = self.stream.isatty()
        self.log_every = log_every
        self._last_log = time.monotonic()
        self._lock = threading.Lock()
        self._drawn = False

    def show(self, view: ProgressView, label: str = "") -> None:
        """Redraw the bar, or log a line if enough time has passed."""
        line = f"{label} {describe(view, self.unit)}".strip()
        with self._lock:
            if self.is_tty:
                self.stream.write(f"\r{_bar(view)} {line}\x1b[K")
                self.stream.flush()
                self._drawn = True
            elif time.monotonic() - self._last_log >= self.log_every:
                self._last_log = time.monotonic()
                logger.info("Progress: %s", line)

    def message(self, text: str, out: TextIO | None = None) -> None:
        """Print a line (to stdout by default) without garbling the bar."""
        with self._lock:
            if self._drawn:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            print(text, file=out or sys.stdout, flush=True)

    def close(self) -> None:
        """End the bar's line on a terminal."""
        with self._lock:
            if self._drawn:
                self.stream.write("\n")
                self.stream.flush()
                self._drawn = False


def _bar(view: ProgressView) -> str:
    if not view.total:
        return "[" + " " * BAR_WIDTH + "]"
    filled = min(BAR_WIDTH, BAR_WIDTH * view.done // view.total)
    return "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
