"""Tell systemd how the service is doing: ready, alive, stopping.

The unit is ``Type=notify`` with ``WatchdogSec=``: systemd waits for
``READY=1`` before it counts the service as started, restarts it when the
``WATCHDOG=1`` pings stop, and learns from ``STOPPING=1`` that a stop has
begun. Messages are datagrams to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (see the sd_notify(3) manual page); a name starting with
``@`` is in the abstract namespace. Outside systemd there is no such socket
and every call here does nothing.

Standard library only, so that it works wherever the appliance starts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)

SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one message, e.g. ``"READY=1"``, to the service manager.

    Parameters
    ----------
    message : str
        One or more ``KEY=value`` lines.
    environ : Mapping, optional
        Where to read ``NOTIFY_SOCKET``; defaults to ``os.environ``.

    Returns
    -------
    bool
        True if it was sent; False when there is no manager to tell or the
        send failed (logged: a lost message must not stop the appliance).
    """
    environ = os.environ if environ is None else environ
    address = _socket_address(environ.get(SOCKET_ENV, ""))
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode("utf-8"), address)
    except OSError:
        logger.exception("Could not notify the service manager")
        return False
    return True


def ready(status: str = "") -> bool:
    """Report that start-up is complete (``READY=1``), with a status line."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def stopping() -> bool:
    """Report that a stop has begun (``STOPPING=1``)."""
    return notify("STOPPING=1")


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Return how often to ping the watchdog, in seconds, or None if not asked.

    sd_watchdog_enabled(3) advises pinging at half of ``WATCHDOG_USEC``.
    When ``WATCHDOG_PID`` names another process, the watchdog is not ours.
    """
    environ = os.environ if environ is None else environ
    owner = environ.get(WATCHDOG_PID_ENV, "")
    if owner and owner != str(os.getpid()):
        return None
    try:
        usec = int(environ.get(WATCHDOG_USEC_ENV, ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


class Watchdog:
    """Ping the systemd watchdog from a thread, but only while healthy.

    A process that hangs, or whose vital parts have died, stops pinging;
    systemd then kills and restarts it (``Restart=on-failure``).

    Parameters
    ----------
    healthy : callable
        Returns True when the service works; asked before every ping. It
        should return within `interval` seconds.
    interval : float
        Seconds between pings.
    """

    def __init__(self, healthy: Callable[[], bool], interval: float) -> None:
        self.healthy = healthy
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start pinging."""
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()
        logger.info("Watchdog pings every %.1f s while healthy", self.interval)

    def stop(self) -> None:
        """Stop pinging and wait for the thread to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        was_healthy = True
        while not self._stop.is_set():
            is_healthy = self._check()
            if is_healthy:
                notify("WATCHDOG=1")
            elif was_healthy:
                logger.error("Unhealthy: watchdog pings withheld")
            if is_healthy and not was_healthy:
                logger.warning("Healthy again: watchdog pings resumed")
            was_healthy = is_healthy
            self._stop.wait(self.interval)

    def _check(self) -> bool:
        try:
            return bool(self.healthy())
        except Exception:
            logger.exception("The health check failed")
            return False


def _socket_address(name: str) -> str | bytes | None:
    # "@name" is Linux's abstract namespace: a leading NUL byte, no file.
    if name.startswith("@"):
        return b"\0" + name[1:].encode("utf-8")
    if name.startswith("/"):
        return name
    return None
