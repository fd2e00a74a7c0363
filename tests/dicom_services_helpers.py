"""Helpers for the DICOM services tests: DCMTK tools, a storescp destination,
worklist entries, and a pynetdicom peer that receives commitment reports.

Every subprocess has a timeout and is killed in a ``finally``; every port is
a free loopback port.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.events import Event

from appliance import db
from appliance.state.worklist import NewEntry, WorklistEntry, add_entry
from tests.conftest import RunningAppliance, free_port

TOOL_TIMEOUT = 60.0
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"


def register(
    appliance: RunningAppliance, ae_title: str, port: int | None = None
) -> None:
    """Register a peer on loopback (with a port when it is a destination)."""
    args = ["modality", "add", ae_title, "--host", "127.0.0.1"]
    if port is not None:
        args += ["--port", str(port)]
    result = appliance.cli(*args)
    assert result.returncode == 0, result.stderr


def schedule(appliance: RunningAppliance, **values: object) -> WorklistEntry:
    """Add a worklist entry through the state API, as the web form will."""
    defaults: dict[str, object] = {
        "patient_id": "PID-1",
        "patient_name": "DOE^JANE",
        "accession_number": "ACC-1",
        "scheduled": datetime.now().replace(second=0, microsecond=0),
        "birth_date": "19800101",
        "sex": "F",
        "issuer": "CLINIC-A",
        "description": "Obstetric ultrasound",
        "station_ae": "SEQUOIA",
    }
    new = NewEntry(**{**defaults, **values})  # type: ignore[arg-type]
    with closing(db.connect(appliance.data_dir / "app.db")) as conn:
        return add_entry(conn, new, created_by="test")


def run_tool(
    args: Sequence[str], timeout: float = TOOL_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool; the timeout kills it."""
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, check=False
    )


def findscu(
    appliance: RunningAppliance,
    model: str,
    keys: Sequence[str],
    out_dir: Path,
    calling_ae: str = "FINDSCU",
) -> list[Dataset]:
    """C-FIND with DCMTK's findscu; return the responses, in order.

    `model` is ``-W`` (worklist), ``-P`` (patient root) or ``-S`` (study root);
    each key is ``Keyword=value`` or ``Keyword`` (a return key).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("rsp*.dcm"):
        old.unlink()
    args = ["findscu", model, "-aet", calling_ae, "-aec", appliance.ae_title]
    for key in keys:
        args += ["-k", key]
    args += ["-X", "-od", str(out_dir), "127.0.0.1", str(appliance.dicom_port)]
    result = run_tool(args)
    assert result.returncode == 0, result.stderr + result.stdout
    return [pydicom.dcmread(path) for path in sorted(out_dir.glob("rsp*.dcm"))]


@contextmanager
def storescp(folder: Path, ae_title: str, *flags: str) -> Iterator[int]:
    """Run DCMTK's storescp on a free port; yield the port; kill it after."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        ["storescp", *flags, "-aet", ae_title, "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, process)
        yield port
    finally:
        process.kill()
        process.wait(timeout=10)


def wait_for_port(
    port: int, process: subprocess.Popen | None = None, timeout: float = 20
) -> None:
    """Wait until something listens on the loopback port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited early with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def received(folder: Path) -> list[Dataset]:
    """Every DICOM file a storescp or getscu wrote into `folder`."""
    return [
        pydicom.dcmread(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith("rsp")
    ]


def commitment_request(references: list[tuple[str, str]]) -> Dataset:
    """Storage Commitment Action Information (PS3.4 Table J.3-1), a new UID.

    Parameters
    ----------
    references : list of (str, str)
        (SOP Class UID, SOP Instance UID) of each instance to commit.
    """
    info = Dataset()
    info.TransactionUID = generate_uid()
    items = []
    for sop_class, uid in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = uid
        items.append(item)
    info.ReferencedSOPSequence = DicomSequence(items)
    return info


@dataclass
class ReportCatcher:
    """Collects N-EVENT-REPORTs that reach a pynetdicom peer."""

    reports: list[tuple[int, Dataset]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def __call__(self, event: Event) -> tuple[int, None]:
        self.reports.append((int(event.event_type), event.event_information))
        self.arrived.set()
        return 0x0000, None

    def wait(self, timeout: float = 30) -> tuple[int, Dataset]:
        assert self.arrived.wait(timeout), "no N-EVENT-REPORT arrived"
        return self.reports[0]


@contextmanager
def commitment_peer(
    ae_title: str, port: int | None = None
) -> Iterator[tuple[int, ReportCatcher]]:
    """A pynetdicom SCP that takes Storage Commitment reports (on a free port)."""
    catcher = ReportCatcher()
    ae = AE(ae_title)
    ae.add_supported_context(STORAGE_COMMITMENT, scu_role=True, scp_role=True)
    port = port or free_port()
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, catcher)],
    )
    try:
        yield port, catcher
    finally:
        server.shutdown()
