"""Read a peer's PDUs in large steps instead of pynetdicom's 4 KiB ones.

pynetdicom reads each PDU by calling ``socket.recv(4096)`` until it has the
length the PDU header announced: 256 calls for each MiB of pixel data, and
each call lets go of the interpreter lock and takes it back. In this
process other threads (hashing, parsing headers, the index writer, the web
server) wait for that lock too, so every one of those calls can hand it
over. Reading whatever the kernel holds, up to :data:`STEP_BYTES` a call,
took about 0.7 ms off the receive of each ultrasound instance (200
instances of 1.1 MB on average, as in ``bench/ingest.py``): over ten rounds
taken in turn, 1.41 times the bare receiver's time instead of 1.63.

The reader replaces the ``recv`` method of one pynetdicom
``AssociationSocket``, for the associations of our own listener only.
Memory grows only as bytes arrive, as in pynetdicom: a PDU header that
announces gigabytes, from a broken or hostile peer, allocates nothing until
the bytes come. If a pynetdicom upgrade stops reading through
``AssociationSocket.recv``, receiving still works, only slower; the test
``tests/test_socket_reads.py`` checks that the replacement is used.
"""

from __future__ import annotations

import socket
import types
from typing import Any

STEP_BYTES = 256 * 1024


def read_in_large_steps(association_socket: Any) -> None:
    """Make `association_socket` (a pynetdicom ``AssociationSocket``) read fast.

    Parameters
    ----------
    association_socket : pynetdicom.transport.AssociationSocket
        The socket of a freshly opened association.
    """
    buffer = memoryview(bytearray(STEP_BYTES))

    def recv(self: Any, nr_bytes: int) -> bytearray:
        return read_exactly(self.socket, nr_bytes, buffer)

    association_socket.recv = types.MethodType(recv, association_socket)


def read_exactly(sock: socket.socket, nr_bytes: int, buffer: memoryview) -> bytearray:
    """Read `nr_bytes` from `sock`, or fewer if the peer closes the connection.

    Parameters
    ----------
    sock : socket.socket
        The connected socket; its time-out applies to each call.
    nr_bytes : int
        How many bytes the caller expects.
    buffer : memoryview
        Scratch space reused from call to call; its size bounds one read.

    Returns
    -------
    bytearray
        The bytes read: all `nr_bytes` of them unless the peer closed first,
        as pynetdicom's own reader returns.

    Raises
    ------
    OSError
        As ``socket.recv_into`` does, time-outs included.
    """
    data = bytearray()
    while len(data) < nr_bytes:
        wanted = min(len(buffer), nr_bytes - len(data))
        received = sock.recv_into(buffer, wanted)
        if not received:
            break
        data += buffer[:received]
    return data
