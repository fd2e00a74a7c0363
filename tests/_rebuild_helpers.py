"""Shared helpers of the rebuild, recovery and check tests.

Instances are copies of real ultrasound files from ``pydicom-data`` with new
UIDs and made-up patients. :func:`ingest` stores one the way the listener
does (spool, fsync, rename, index), without the network, so tests can build
a data folder quickly; the end-to-end tests send over DICOM instead.
:func:`index_snapshot` reads every row of an index with ids replaced by what
they point to, so two indexes built in different orders compare equal when
they hold the same patients, studies, series and instances.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset
from pydicom.uid import generate_uid

from appliance.index import IndexWriter, read_header, record_from_header
from appliance.storage import Storage

REPO = Path(__file__).resolve().parent.parent
APPLIANCE = REPO / ".venv" / "bin" / "appliance"
SENDER_AE = "RBSENDER"
SINGLES = ("US1_UNCR.dcm", "gdcm-US-ALOKA-16.dcm", "OBXXXX1A.dcm")
CLIP = "color3d_jpeg_baseline.dcm"


@dataclass(frozen=True)
class Patient:
    """Made-up demographics."""

    patient_id: str
    name: str
    birth_date: str
    sex: str


PATIENTS = (
    Patient("RB001", "DOE^JANE", "19800101", "F"),
    Patient("RB002", "ROE^ANNA", "19750505", "F"),
    # Same ID as the first, another birth date: a second record, a conflict.
    Patient("RB001", "DOE^JANE", "19810202", "F"),
)

_CACHE: dict[str, FileDataset] = {}


def source(name: str) -> FileDataset:
    """Return a pydicom-data test file, read once per test session."""
    if name not in _CACHE:
        path = get_testdata_file(name)
        assert isinstance(path, str), name
        _CACHE[name] = pydicom.dcmread(path)
    return _CACHE[name]


def make_instances(
    folder: Path,
    count: int,
    *,
    clips: bool = True,
    patients: Sequence[Patient] = PATIENTS,
) -> list[Path]:
    """Write `count` instances into `folder`: two studies per patient.

    Every fifth instance is the SonoSite cine clip when `clips` is true; the
    others cycle through the GE, ALOKA and Philips single frames.
    """
    folder.mkdir(parents=True, exist_ok=True)
    studies = [(p, generate_uid(), n) for p in patients for n in range(2)]
    series: dict[tuple[str, str], str] = {}
    written = []
    for number in range(count):
        patient, study_uid, _ = studies[number % len(studies)]
        name = CLIP if clips and number % 5 == 4 else SINGLES[number % len(SINGLES)]
        ds = source(name)
        ds.PatientID, ds.PatientName = patient.patient_id, patient.name
        ds.PatientBirthDate, ds.PatientSex = patient.birth_date, patient.sex
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series.setdefault((study_uid, name), generate_uid())
        ds.InstanceNumber = number + 1
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def ingest(
    storage: Storage, writer: IndexWriter | None, path: Path, source_ae: str = SENDER_AE
) -> str:
    """Store `path` as the listener would; index it unless `writer` is None.

    Returns
    -------
    str
        The stored file's path relative to ``storage/``.
    """
    spool = storage.new_spool()
    spool.write(path.read_bytes())
    spool.finish()
    received_at = datetime.fromtimestamp(os.stat(spool.path).st_mtime)
    header = read_header(spool.path)
    relative = storage.relative_path(
        received_at, source_ae, str(header.SOPInstanceUID), spool.sha256
    )
    record = record_from_header(
        header,
        file_path=str(relative),
        file_size=spool.size,
        sha256=spool.sha256,
        received_at=received_at,
        source_ae=source_ae,
    )
    storage.commit(spool, relative)
    spool.close()
    if writer is not None:
        writer.add_instance(record)
    return str(relative)


def index_snapshot(index_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Return every row of every table, ids replaced by what they point to."""
    with closing(sqlite3.connect(index_path)) as conn:
        conn.row_factory = sqlite3.Row
        patients = {
            row["id"]: _values(row, "id")
            for row in conn.execute("SELECT * FROM patients")
        }
        studies = {
            row["id"]: row["study_uid"] for row in conn.execute("SELECT * FROM studies")
        }
        series = {
            row["id"]: row["series_uid"] for row in conn.execute("SELECT * FROM series")
        }
        return {
            "patients": sorted(patients.values()),
            "studies": _rows(conn, "studies", {"patient_ref": patients}),
            "series": _rows(conn, "series", {"study_ref": studies}),
            "instances": _rows(
                conn, "instances", {"series_ref": series, "patient_ref": patients}
            ),
            "conflicts": sorted(
                tuple(sorted((patients[r["patient_a"]], patients[r["patient_b"]])))
                + (r["fields"], r["detected_at"], r["source_ae"])
                for r in conn.execute("SELECT * FROM identity_conflicts")
            ),
        }


def dump_database(path: Path) -> list[str]:
    """Return an SQL dump of a database, to compare its rows."""
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.iterdump())


def _values(row: sqlite3.Row, *skip: str) -> tuple[Any, ...]:
    return tuple(row[key] for key in row.keys() if key not in skip)


def _rows(
    conn: sqlite3.Connection, table: str, refs: dict[str, dict[int, Any]]
) -> list[tuple[Any, ...]]:
    rows = []
    for row in conn.execute(f"SELECT * FROM {table}"):
        rows.append(
            tuple(
                refs[key][row[key]] if key in refs else row[key]
                for key in row.keys()
                if key != "id"
            )
        )
    return sorted(rows, key=repr)


# --- The real process, over loopback -------------------------------------


def free_port() -> int:
    """Return a loopback TCP port nothing listens on just now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running ``appliance serve`` and how to reach it."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    dicom_port: int
    http_port: int
    log: Path

    def health(self) -> dict[str, Any]:
        """Return ``/healthz`` as a dict."""
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.loads(response.read()))

    def wait_index_idle(self, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until no rebuild or reconcile runs; return the index health."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                index = self.health()["index"]
            except OSError:
                index = {"state": "starting"}
            if index["state"] == "idle" and not index.get("rebuild", {}).get("running"):
                return dict(index)
            time.sleep(0.2)
        raise TimeoutError(f"index still busy after {timeout} s; see {self.log}")


def environment(data_dir: Path, dicom_port: int, http_port: int) -> dict[str, str]:
    """Return the environment that points the appliance at `data_dir`."""
    return {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(data_dir),
        "APPLIANCE_DICOM_PORT": str(dicom_port),
        "APPLIANCE_HTTP_PORT": str(http_port),
        "APPLIANCE_AE_TITLE": "APPLIANCE",
        "APPLIANCE_SHUTDOWN_GRACE": "5",
    }


def run_command(
    data_dir: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run an ``appliance`` command against `data_dir`; return its result."""
    env = environment(data_dir, free_port(), free_port())
    return subprocess.run(
        [str(APPLIANCE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@contextmanager
def running_server(data_dir: Path, *, kill: bool = False) -> Iterator[Server]:
    """Start ``appliance serve`` on free ports; stop it (SIGTERM, or SIGKILL)."""
    result = run_command(data_dir, "modality", "add", SENDER_AE, "--exist-ok")
    assert result.returncode == 0, result.stderr
    dicom_port, http_port = free_port(), free_port()
    log = data_dir.parent / f"serve-{dicom_port}.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [str(APPLIANCE), "serve"],
            env=environment(data_dir, dicom_port, http_port),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Server(process, data_dir, dicom_port, http_port, log)
    try:
        _wait_for_health(server)
        yield server
    finally:
        if process.poll() is None:
            if kill:
                process.kill()
            else:
                process.terminate()
            process.wait(timeout=60)


def _wait_for_health(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"appliance exited; see {server.log}:\n{server.log.read_text()}"
            )
        try:
            server.health()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"appliance did not answer /healthz; see {server.log}")


def send(port: int, paths: Sequence[Path]) -> list[int]:
    """Send files with pynetdicom over one association; return the statuses."""
    from pynetdicom import AE

    datasets = [pydicom.dcmread(path) for path in paths]
    ae = AE(ae_title=SENDER_AE)
    for context in {
        (ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets
    }:
        ae.add_requested_context(*context)
    assoc = ae.associate("127.0.0.1", port, ae_title="APPLIANCE")
    assert assoc.is_established, "association refused"
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()
