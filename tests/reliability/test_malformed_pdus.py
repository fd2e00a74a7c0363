"""Malformed PDUs on the DICOM port, sent on raw sockets (PS3.8 9.3).

A PDU the listener cannot parse gets an A-ABORT (or the connection is
closed), a wrong protocol version an A-ASSOCIATE-RJ, a data set of garbage
bytes a failure status; after each, a C-ECHO on a fresh association still
succeeds.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from appliance.dicom.listener import ACSE_TIMEOUT, FIRST_PDU_TIMEOUT
from tests.conftest import RunningAppliance, make_appliance
from tests.dicom_helpers import echo
from tests.reliability import pdus

pytestmark = pytest.mark.e2e

Case = Callable[[], list[bytes]]
RQ = pdus.associate_rq("PYNETDICOM")
ESTABLISH = pdus.associate_rq(
    "PYNETDICOM",
    contexts=(
        (1, pdus.VERIFICATION, pdus.IMPLICIT_LE),
        (3, pdus.US_IMAGE, pdus.EXPLICIT_LE),
    ),
)

BEFORE_ASSOCIATION: dict[str, Case] = {
    "random bytes": lambda: [os.urandom(64)],
    "unknown PDU type": lambda: [pdus.pdu(0x09, b"x" * 20)],
    "A-ASSOCIATE-RQ of length 0": lambda: [pdus.pdu(pdus.ASSOCIATE_RQ, b"")],
    "A-ASSOCIATE-RQ shorter than said": lambda: [
        RQ[:2] + struct.pack(">I", 10) + RQ[6:]
    ],
    "item length past the PDU": lambda: [
        pdus.pdu(pdus.ASSOCIATE_RQ, RQ[6:74] + pdus.item(0x10, b"1.2", length=0xFFFF))
    ],
    "P-DATA-TF before any association": lambda: [
        pdus.p_data(1, pdus.COMMAND_LAST, pdus.echo_rq())
    ],
}
AFTER_ASSOCIATION: dict[str, Case] = {
    "PDV length past the PDU": lambda: [
        pdus.pdu(pdus.P_DATA, struct.pack(">IBB", 5000, 1, 3) + b"abc")
    ],
    "P-DATA-TF on a context never proposed": lambda: [
        pdus.p_data(99, pdus.COMMAND_LAST, pdus.echo_rq())
    ],
    "command of random bytes": lambda: [
        pdus.p_data(1, pdus.COMMAND_LAST, os.urandom(40))
    ],
}
BAD_DATA: dict[str, bytes] = {
    "random bytes": os.urandom(300),
    "an element longer than the data": b"\x10\x00\x10\x00PN\x20\x00abc",
    "an undefined-length item that never ends": b"\x08\x00\x15\x11SQ\x00\x00"
    + b"\xff\xff\xff\xff\xfe\xff\x00\xe0\xff\xff\xff\xff",
}


def _aborted(sock: object) -> bool:
    answer = pdus.read_pdu(sock)  # type: ignore[arg-type]
    return answer is None or answer[0] == pdus.ABORT


@pytest.mark.parametrize("case", sorted(BEFORE_ASSOCIATION))
def test_malformed_pdus_before_association_are_aborted(
    listener: RunningAppliance, case: str
) -> None:
    with pdus.connect(listener.dicom_port) as sock:
        for chunk in BEFORE_ASSOCIATION[case]():
            sock.sendall(chunk)
        assert _aborted(sock)
    assert echo(listener.dicom_port, "PYNETDICOM") == 0x0000


def test_a_wrong_protocol_version_is_rejected(listener: RunningAppliance) -> None:
    with pdus.connect(listener.dicom_port) as sock:
        sock.sendall(pdus.associate_rq("PYNETDICOM", version=2))
        answer = pdus.read_pdu(sock)
    assert answer is not None and answer[0] == pdus.ASSOCIATE_RJ
    assert echo(listener.dicom_port, "PYNETDICOM") == 0x0000


def test_hand_built_pdus_are_understood(listener: RunningAppliance) -> None:
    # The control for the cases below: well-formed, they get a C-ECHO answer.
    with pdus.connect(listener.dicom_port) as sock:
        sock.sendall(ESTABLISH)
        accepted = pdus.read_pdu(sock)
        assert accepted is not None and accepted[0] == pdus.ASSOCIATE_AC
        sock.sendall(pdus.p_data(1, pdus.COMMAND_LAST, pdus.echo_rq()))
        answer = pdus.read_pdu(sock)
        assert answer is not None and pdus.status_of(answer) == 0x0000
        sock.sendall(pdus.release_rq())
        released = pdus.read_pdu(sock)
        assert released is not None and released[0] == pdus.RELEASE_RP


@pytest.mark.parametrize("case", sorted(AFTER_ASSOCIATION))
def test_malformed_pdus_in_an_association_are_aborted(
    listener: RunningAppliance, case: str
) -> None:
    with pdus.connect(listener.dicom_port) as sock:
        sock.sendall(ESTABLISH)
        accepted = pdus.read_pdu(sock)
        assert accepted is not None and accepted[0] == pdus.ASSOCIATE_AC
        for chunk in AFTER_ASSOCIATION[case]():
            sock.sendall(chunk)
        assert _aborted(sock)
    assert echo(listener.dicom_port, "PYNETDICOM") == 0x0000


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_unreadable_data_set_bytes_get_a_failure_status(
    listener: RunningAppliance, case: str
) -> None:
    uid = generate_uid()
    with pdus.connect(listener.dicom_port) as sock:
        sock.sendall(ESTABLISH)
        accepted = pdus.read_pdu(sock)
        assert accepted is not None and accepted[0] == pdus.ASSOCIATE_AC
        sock.sendall(pdus.p_data(3, pdus.COMMAND_LAST, pdus.store_rq(uid)))
        sock.sendall(pdus.p_data(3, pdus.DATA_LAST, BAD_DATA[case]))
        answer = pdus.read_pdu(sock)
        assert answer is not None and answer[0] == pdus.P_DATA
        status = pdus.status_of(answer)
        assert status is not None and status >> 12 in (0xA, 0xC), status
    assert uid not in {row for row in _indexed_uids(listener)}
    assert list((listener.data_dir / "incoming").iterdir()) == []
    assert echo(listener.dicom_port, "PYNETDICOM") == 0x0000


def _indexed_uids(appliance: RunningAppliance) -> set[str]:
    with appliance.index() as conn:
        return {row[0] for row in conn.execute("SELECT sop_uid FROM instances")}


def test_idle_connections_do_not_lock_the_modality_out(tmp_path: Path) -> None:
    appliance = make_appliance(tmp_path / "data")
    appliance.start()
    idle: list[socket.socket] = []
    try:
        idle += [pdus.connect(appliance.dicom_port) for _ in range(25)]
        assert echo(appliance.dicom_port, "PYNETDICOM") == 0x0000
    finally:
        for sock in idle:
            sock.close()
        appliance.kill()


def test_a_connection_that_sends_nothing_is_closed_after_the_first_pdu_timeout(
    listener: RunningAppliance,
) -> None:
    # Not after the 30 s ACSE timeout: an idle socket costs a thread meanwhile.
    with pdus.connect(listener.dicom_port) as sock:
        started = time.monotonic()
        assert pdus.wait_closed(sock, timeout=ACSE_TIMEOUT)
        waited = time.monotonic() - started
    assert FIRST_PDU_TIMEOUT - 0.5 < waited < FIRST_PDU_TIMEOUT + 5
    assert echo(listener.dicom_port, "PYNETDICOM") == 0x0000


def test_a_peer_slow_to_ask_within_the_first_pdu_timeout_is_served(
    listener: RunningAppliance,
) -> None:
    with pdus.connect(listener.dicom_port) as sock:
        time.sleep(FIRST_PDU_TIMEOUT / 3)
        sock.sendall(ESTABLISH)
        accepted = pdus.read_pdu(sock)
        assert accepted is not None and accepted[0] == pdus.ASSOCIATE_AC
        sock.sendall(pdus.p_data(1, pdus.COMMAND_LAST, pdus.echo_rq()))
        answer = pdus.read_pdu(sock)
        assert answer is not None and pdus.status_of(answer) == 0x0000
        sock.sendall(pdus.release_rq())
        released = pdus.read_pdu(sock)
        assert released is not None and released[0] == pdus.RELEASE_RP
