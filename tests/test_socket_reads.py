"""Reading PDUs in large steps: the reader, and that the listener uses it."""

from __future__ import annotations

import socket
import threading

import pytest

from appliance.dicom import socket_reads
from appliance.dicom.socket_reads import STEP_BYTES, read_exactly
from appliance.service import Appliance
from tests.conftest import sample_file
from tests.dicom_helpers import renamed_copy, send_datasets

SUCCESS = 0x0000


def _send_in_pieces(sock: socket.socket, data: bytes, piece: int) -> None:
    for start in range(0, len(data), piece):
        sock.sendall(data[start : start + piece])


def test_a_read_gathers_every_byte_sent_in_small_pieces() -> None:
    data = bytes(range(256)) * 8192  # 2 MiB, more than one step
    reader, writer = socket.socketpair()
    with reader, writer:
        sender = threading.Thread(target=_send_in_pieces, args=(writer, data, 1000))
        sender.start()
        received = read_exactly(reader, len(data), memoryview(bytearray(STEP_BYTES)))
        sender.join()

    assert received == data


def test_a_peer_that_closes_early_gives_what_it_sent() -> None:
    reader, writer = socket.socketpair()
    with reader:
        writer.sendall(b"0123456789")
        writer.close()

        received = read_exactly(reader, 100, memoryview(bytearray(16)))

    assert received == b"0123456789"


def test_a_silent_peer_times_out() -> None:
    reader, writer = socket.socketpair()
    with reader, writer:
        reader.settimeout(0.2)
        with pytest.raises(OSError):
            read_exactly(reader, 10, memoryview(bytearray(16)))


def test_the_listener_reads_through_the_large_steps(
    in_process_appliance: Appliance, monkeypatch: pytest.MonkeyPatch
) -> None:
    # If a pynetdicom upgrade stopped calling AssociationSocket.recv, the
    # listener would still work, only slower: this notices.
    sizes: list[int] = []
    original = socket_reads.read_exactly

    def counted(sock: socket.socket, nr_bytes: int, buffer: memoryview) -> bytearray:
        data = original(sock, nr_bytes, buffer)
        sizes.append(len(data))
        return data

    monkeypatch.setattr(socket_reads, "read_exactly", counted)
    clip = renamed_copy(sample_file("US1_UNCR.dcm"), patient_id="READS1")

    statuses = send_datasets(in_process_appliance.settings.dicom_port, [clip])

    assert statuses == [SUCCESS]
    assert sizes and max(sizes) > 4096, "PDUs were not read through read_exactly"
