"""What the reliability tests share: waiting for the service, and checking it.

Every check reads the real data folder of a real ``appliance serve``: the
index rows against the files under ``storage/``, each acknowledged instance
against its file (present, readable, same content hash), and
``incoming/`` empty.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE

from appliance.storage import hash_file
from tests.conftest import RunningAppliance

SETTLE_TIMEOUT = 120.0
SUCCESS = 0x0000


def health(appliance: RunningAppliance) -> dict[str, Any]:
    """Return what ``/healthz`` says, or an empty dict if it does not answer."""
    url = f"http://127.0.0.1:{appliance.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.load(response))
    except (OSError, ValueError):
        return {}


def wait_until_settled(
    appliance: RunningAppliance, timeout: float = SETTLE_TIMEOUT
) -> None:
    """Wait until the start-up reconcile (or rebuild) of the index is over."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health(appliance).get("index", {}).get("state") == "idle":
            return
        time.sleep(0.1)
    raise AssertionError(f"the index did not settle in {timeout} s:\n{appliance.log()}")


def indexed(appliance: RunningAppliance) -> dict[str, tuple[str, str]]:
    """Return every index row as ``{SOP Instance UID: (file path, sha256)}``."""
    with appliance.index() as conn:
        rows = conn.execute("SELECT sop_uid, file_path, sha256 FROM instances")
        return {row[0]: (row[1], row[2]) for row in rows}


def stored(appliance: RunningAppliance) -> set[str]:
    """Return the path of every file under ``storage/``, relative to it."""
    root = appliance.data_dir / "storage"
    return {path.relative_to(root).as_posix() for path in appliance.stored_files()}


def assert_index_matches_storage(appliance: RunningAppliance) -> None:
    """Every row has its file, every file its row, and nothing is half-received."""
    rows = {path for path, _sha in indexed(appliance).values()}
    files = stored(appliance)
    assert rows - files == set(), "indexed but not stored"
    assert files - rows == set(), "stored but not indexed"
    assert list((appliance.data_dir / "incoming").iterdir()) == []


def assert_kept(
    appliance: RunningAppliance, uids: Iterable[str], *, read: bool = True
) -> None:
    """Every UID is indexed; its file exists, hashes right and reads back."""
    rows = indexed(appliance)
    missing = [uid for uid in uids if uid not in rows]
    assert missing == [], f"{len(missing)} acknowledged instances lost"
    if not read:
        return
    for uid in uids:
        relative, sha256 = rows[uid]
        path = appliance.data_dir / "storage" / relative
        assert hash_file(path) == sha256, relative
        assert pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID == uid


def fresh(dataset: Dataset, *, new_study: bool = False) -> Dataset:
    """Give `dataset` a new SOP Instance UID (and study); return it."""
    if new_study:
        dataset.StudyInstanceUID = generate_uid()
        dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return dataset


class Modality(threading.Thread):
    """Sends data sets in associations of a few until stopped or refused.

    Each acknowledged (Success) SOP Instance UID is kept in
    :attr:`acknowledged`; any other answer is kept in :attr:`failures` and,
    with ``stop_on_failure``, ends the sending (a kill -9 makes it stop).
    """

    def __init__(
        self,
        port: int,
        sources: Sequence[Dataset],
        *,
        per_association: int = 4,
        pause: float = 0.0,
        deadline: float | None = None,
        stop_on_failure: bool = True,
    ) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.sources = sources
        self.per_association = per_association
        self.pause = pause
        self.deadline = deadline
        self.stop_on_failure = stop_on_failure
        self.acknowledged: list[str] = []
        self.failures: list[str] = []
        self.halt = threading.Event()
        self._count = 0
        self._picked = 0

    def run(self) -> None:
        while not self.halt.is_set() and not self._past_deadline():
            try:
                ok = self._one_association()
            except Exception as exc:  # a killed peer resets the connection
                self.failures.append(f"association: {exc!r}")
                ok = False
            if not ok and self.stop_on_failure:
                return
            if self.pause:
                self.halt.wait(self.pause)

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def _one_association(self) -> bool:
        batch = [self._next_source() for _ in range(self.per_association)]
        ae = AE("PYNETDICOM")
        ae.maximum_pdu_size = 0
        for syntax in {(d.SOPClassUID, d.file_meta.TransferSyntaxUID) for d in batch}:
            ae.add_requested_context(*syntax)
        assoc = ae.associate("127.0.0.1", self.port, ae_title="APPLIANCE")
        if not assoc.is_established:
            self.failures.append("association refused or not answered")
            return False
        try:
            for source in batch:
                # Renamed just before it goes: one object per source file
                self._count += 1
                dataset = fresh(source, new_study=self._count % 7 == 0)
                status = assoc.send_c_store(dataset)
                code = int(status.Status) if "Status" in status else None
                if code != SUCCESS:
                    self.failures.append(f"C-STORE answered {code}")
                    return False
                self.acknowledged.append(str(dataset.SOPInstanceUID))
        finally:
            if assoc.is_established:
                assoc.release()
        return True

    def _next_source(self) -> Dataset:
        self._picked += 1
        return self.sources[self._picked % len(self.sources)]


def read_sources(paths: Iterable[Path]) -> list[Dataset]:
    """Read each file once; :class:`Modality` renames them as it sends."""
    return [pydicom.dcmread(path) for path in paths]
