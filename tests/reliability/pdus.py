"""Upper-layer PDUs built by hand (PS3.8 9.3), to be sent broken on purpose.

Only what the hostile-input tests need: A-ASSOCIATE-RQ, P-DATA-TF,
A-RELEASE-RQ, DIMSE commands encoded in Implicit VR Little Endian
(PS3.7 6.3.1), and reading one PDU back from a raw socket.
"""

from __future__ import annotations

import socket
import struct
import time

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
VERIFICATION = "1.2.840.10008.1.1"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA, RELEASE_RQ, RELEASE_RP, ABORT = 0x04, 0x05, 0x06, 0x07
COMMAND_LAST, DATA_LAST = 0x03, 0x02


def pdu(kind: int, body: bytes, length: int | None = None) -> bytes:
    """Return a PDU: type, reserved byte, 4-byte length, body (PS3.8 9.3.1)."""
    size = len(body) if length is None else length
    return struct.pack(">BBI", kind, 0, size) + body


def item(kind: int, body: bytes, length: int | None = None) -> bytes:
    """Return a variable item: type, reserved, 2-byte length, body."""
    size = len(body) if length is None else length
    return struct.pack(">BBH", kind, 0, size) + body


def associate_rq(
    calling: str,
    called: str = "APPLIANCE",
    contexts: tuple[tuple[int, str, str], ...] = ((1, VERIFICATION, IMPLICIT_LE),),
    version: int = 1,
) -> bytes:
    """Return an A-ASSOCIATE-RQ proposing `contexts` (id, abstract, transfer)."""
    fixed = struct.pack(">HH", version, 0)
    fixed += called.encode().ljust(16) + calling.encode().ljust(16) + bytes(32)
    items = item(0x10, APPLICATION_CONTEXT.encode())
    for context_id, abstract, transfer in contexts:
        sub = item(0x30, abstract.encode()) + item(0x40, transfer.encode())
        items += item(0x20, struct.pack(">BBBB", context_id, 0, 0, 0) + sub)
    items += item(0x50, item(0x51, struct.pack(">I", 0)))
    return pdu(ASSOCIATE_RQ, fixed + items)


def p_data(context_id: int, control: int, data: bytes) -> bytes:
    """Return a P-DATA-TF with one presentation data value (PS3.8 9.3.5)."""
    value = struct.pack(">IBB", len(data) + 2, context_id, control) + data
    return pdu(P_DATA, value)


def release_rq() -> bytes:
    """Return an A-RELEASE-RQ."""
    return pdu(RELEASE_RQ, bytes(4))


def command(**elements: object) -> bytes:
    """Encode a DIMSE command set, group length first (PS3.7 E.1)."""
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    body = _implicit(ds)
    length = Dataset()
    length.CommandGroupLength = len(body)
    return _implicit(length) + body


def echo_rq(message_id: int = 1) -> bytes:
    """A C-ECHO-RQ command (PS3.7 9.3.5)."""
    return command(
        AffectedSOPClassUID=VERIFICATION,
        CommandField=0x0030,
        MessageID=message_id,
        CommandDataSetType=0x0101,
    )


def store_rq(sop_instance_uid: str, message_id: int = 1) -> bytes:
    """A C-STORE-RQ command announcing a data set (PS3.7 9.3.1)."""
    return command(
        AffectedSOPClassUID=US_IMAGE,
        CommandField=0x0001,
        MessageID=message_id,
        Priority=0,
        CommandDataSetType=0x0000,
        AffectedSOPInstanceUID=sop_instance_uid,
    )


def status_of(response: bytes) -> int | None:
    """Return the Status (0000,0900) of a P-DATA-TF carrying a response."""
    data = response[12:]
    tag = struct.pack("<HHI", 0x0000, 0x0900, 2)
    at = data.find(tag)
    return None if at < 0 else int(struct.unpack("<H", data[at + 8 : at + 10])[0])


def connect(port: int) -> socket.socket:
    """Open a TCP connection to the listener on loopback."""
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_pdu(sock: socket.socket, timeout: float = 10.0) -> bytes | None:
    """Read one whole PDU; None when the peer closed the connection first."""
    sock.settimeout(timeout)
    header = _read_exactly(sock, 6)
    if header is None:
        return None
    (length,) = struct.unpack(">I", header[2:])
    body = _read_exactly(sock, length)
    return None if body is None else header + body


def wait_closed(sock: socket.socket, timeout: float = 10.0) -> bool:
    """Read until the peer closes; True if it did within `timeout`."""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = b""
    while len(chunks) < size:
        try:
            chunk = sock.recv(size - len(chunks))
        except (ConnectionResetError, TimeoutError):
            return None
        if not chunk:
            return None
        chunks += chunk
    return chunks


def _implicit(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = True
    write_dataset(buffer, ds)
    return buffer.getvalue()
