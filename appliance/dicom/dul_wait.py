"""Wake pynetdicom's network thread as soon as a peer's bytes arrive.

Each association has a network thread (pynetdicom's ``DULServiceProvider``)
that checks its socket and, when the last check found nothing to do, sleeps
1 ms before it looks again. A modality sends an instance as a series of
PDUs and waits for its response before it sends the next instance, so
nearly every PDU arrived during such a sleep and waited for its end. For our listener's
associations the sleep becomes a wait on the socket with the same time-out:
it ends the moment bytes arrive, and otherwise lasts as long as before, so
an idle association costs no more than it did. Measured with
``bench/ingest.py`` (200 instances, five rounds taken in turn): 1.26 s
instead of 1.45 s, against 0.93 s for the bare receiver.

Responses go the other way and still wait for the end of a sleep: the store
handler runs on the association's own thread, which hands the response to
the network thread through a queue that the thread looks at between sleeps.

This replaces the name ``time`` inside pynetdicom's ``dul`` module with a
stand-in whose ``sleep`` knows about marked threads; every other thread,
and every other attribute, gets the real ``time`` module. If a pynetdicom
upgrade stops sleeping through that name, receiving still works, only
slower; ``tests/test_dul_wait.py`` notices.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any

from pynetdicom import dul

_MARK = "_appliance_wakes_on_data"


class _WakingClock:
    """Stands in for the ``time`` module inside ``pynetdicom.dul``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        """Sleep, or on a marked network thread, wait for data as long."""
        sock = _socket_of(threading.current_thread())
        if sock is not None and wait_for_data(sock, seconds):
            return
        time.sleep(seconds)


def wake_on_data(network_thread: Any) -> None:
    """Let `network_thread` end its idle sleeps when its peer sends.

    Parameters
    ----------
    network_thread : pynetdicom.dul.DULServiceProvider
        The network thread of a freshly opened association.
    """
    setattr(network_thread, _MARK, True)
    if not isinstance(dul.time, _WakingClock):
        dul.time = _WakingClock()  # type: ignore[assignment]


def wait_for_data(sock: socket.socket, seconds: float) -> bool:
    """Wait until `sock` can be read or `seconds` pass.

    Parameters
    ----------
    sock : socket.socket
        A connected socket.
    seconds : float
        The longest wait.

    Returns
    -------
    bool
        False if the socket could not be waited on (closed meanwhile, or a
        descriptor beyond ``select``'s range) and nothing was waited for;
        True otherwise, whether data came or the time ran out.
    """
    try:
        select.select([sock], [], [], seconds)
    except (OSError, ValueError):
        return False
    return True


def _socket_of(thread: threading.Thread) -> socket.socket | None:
    """Return the connected socket of a marked network thread, else None."""
    if not getattr(thread, _MARK, False):
        return None

    association_socket = getattr(thread, "socket", None)
    if not getattr(association_socket, "_is_connected", False):
        return None
    sock = getattr(association_socket, "socket", None)
    return sock if isinstance(sock, socket.socket) else None
