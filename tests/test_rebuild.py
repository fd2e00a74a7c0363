"""Rebuilding index.db from storage, in process and with the real command."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE

from appliance.index import IndexWriter, index_reader, readahead
from appliance.index.decisions import apply_identity_decisions
from appliance.index.rebuild import Rebuilder, RebuildFiles
from appliance.index.status import RebuildState, RebuildStatus
from appliance.progress import ProgressPrinter, ProgressView
from appliance.storage import Storage
from tests._rebuild_helpers import (
    SENDER_AE,
    index_snapshot,
    ingest,
    make_instances,
    run_command,
    running_server,
    send,
)


@dataclass
class Live:
    """A data folder with a running writer, as the service has it."""

    storage: Storage
    writer: IndexWriter
    files: RebuildFiles
    status: RebuildStatus

    def rebuilder(self, **kwargs: object) -> Rebuilder:
        decisions = kwargs.pop("decisions", list)
        return Rebuilder(
            self.storage,
            self.files,
            self.writer,
            self.status,
            decisions,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    data_dir = tmp_path / "data"
    storage = Storage(data_dir)
    storage.prepare()
    writer = IndexWriter(data_dir / "index.db")
    writer.start()
    files = RebuildFiles(data_dir / "index.db", data_dir / "maintenance")
    yield Live(storage, writer, files, RebuildStatus())
    writer.stop()


@pytest.fixture
def instances(tmp_path: Path) -> list[Path]:
    return make_instances(tmp_path / "source", 11)


def test_rebuild_gives_back_every_row(live: Live, instances: list[Path]) -> None:
    for path in instances:
        ingest(live.storage, live.writer, path)
    # An identical re-send is not stored twice; a differing copy is kept.
    ingest(live.storage, live.writer, instances[0])
    before = index_snapshot(live.files.index)
    inode = live.files.index.stat().st_ino

    summary = live.rebuilder().run("test")

    assert summary is not None
    assert index_snapshot(live.files.index) == before
    assert live.files.index.stat().st_ino != inode
    assert (summary.instances, summary.studies, summary.patients) == (11, 6, 3)
    assert summary.conflicts == 1
    assert live.status.state is RebuildState.DONE
    assert not live.files.new_index.exists()


def test_writer_keeps_working_after_the_swap(live: Live, instances: list[Path]) -> None:
    ingest(live.storage, live.writer, instances[0])
    live.rebuilder().run("test")

    ingest(live.storage, live.writer, instances[1])

    with index_reader(live.files.index) as conn:
        assert conn.execute("SELECT count(*) FROM instances").fetchone()[0] == 2


def test_unreadable_files_are_reported_and_left(
    live: Live, instances: list[Path]
) -> None:
    ingest(live.storage, live.writer, instances[0])
    broken = live.storage.absolute(f"2024/01/02/AE/1.2.3.{'0' * 64}.dcm")
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not DICOM at all")
    foreign = live.storage.files_dir / "README.txt"
    foreign.write_text("left by hand")

    summary = live.rebuilder().run("test")

    assert summary is not None
    assert (summary.instances, summary.unreadable) == (1, 2)
    assert broken.exists() and foreign.exists()
    report = live.files.report.read_text()
    assert "2024/01/02/AE/1.2.3." in report and "README.txt" in report


def test_instances_arriving_during_a_rebuild_are_kept(
    live: Live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    early = make_instances(tmp_path / "early", 6, clips=False)
    late = make_instances(tmp_path / "late", 6, clips=False)
    for path in early:
        ingest(live.storage, live.writer, path)

    # While the rebuild reads headers (its scan is over), more arrive live.
    real_read = readahead.read_or_reason
    arrivals = iter(late)

    def read_and_receive(file):  # type: ignore[no-untyped-def]
        path = next(arrivals, None)
        if path is not None:
            ingest(live.storage, live.writer, path)
        return real_read(file)

    monkeypatch.setattr(readahead, "read_or_reason", read_and_receive)
    summary = live.rebuilder().run("test")

    assert summary is not None
    assert summary.instances == 12
    with index_reader(live.files.index) as conn:
        count = conn.execute("SELECT count(*) FROM instances").fetchone()[0]
    assert count == 12


def test_a_cancelled_rebuild_changes_nothing(live: Live, instances: list[Path]) -> None:
    for path in instances[:3]:
        ingest(live.storage, live.writer, path)
    before = index_snapshot(live.files.index)
    cancel = threading.Event()
    cancel.set()

    summary = live.rebuilder(cancel=cancel).run("test")

    assert summary is None
    assert live.status.state is RebuildState.CANCELLED
    assert index_snapshot(live.files.index) == before
    assert not live.files.new_index.exists()


def test_decisions_are_applied_and_unknown_ones_stop_the_swap(
    live: Live, instances: list[Path]
) -> None:
    ingest(live.storage, live.writer, instances[0])
    before = index_snapshot(live.files.index)

    summary = live.rebuilder(decisions=lambda: [object()]).run("test")

    assert summary is None
    assert live.status.state is RebuildState.FAILED
    assert "identity decision" in live.status.snapshot()["error"]
    assert index_snapshot(live.files.index) == before


def test_the_decision_hook_accepts_no_decisions(live: Live) -> None:
    with index_reader(live.files.index) as conn:
        assert apply_identity_decisions(conn, []) == 0


def test_status_snapshot_has_progress(live: Live, instances: list[Path]) -> None:
    for path in instances[:4]:
        ingest(live.storage, live.writer, path)

    live.rebuilder().run("test")
    snapshot = live.status.snapshot()

    assert snapshot["state"] == "done" and not snapshot["running"]
    assert (snapshot["done"], snapshot["total"]) == (4, 4)
    assert snapshot["summary"]["instances"] == 4


def test_progress_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    printer = ProgressPrinter("files", stream)

    printer.show(ProgressView(done=50, total=200, seconds=10.0), "indexing")
    printer.close()

    text = stream.getvalue()
    assert "[#######" in text and "50/200 files" in text
    assert "5/s" in text and "30s left" in text


def test_progress_logs_lines_when_not_a_terminal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    printer = ProgressPrinter("files", io.StringIO(), log_every=0)
    with caplog.at_level("INFO"):
        printer.show(ProgressView(done=3, total=None, seconds=1.0))
    assert "3/? files" in caplog.text


def test_rebuild_index_command_without_a_service(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    storage = Storage(data_dir)
    storage.prepare()
    writer = IndexWriter(data_dir / "index.db")
    writer.start()
    for path in make_instances(tmp_path / "source", 4, clips=False):
        ingest(storage, writer, path)
    writer.stop()
    before = index_snapshot(data_dir / "index.db")
    (storage.files_dir / "stray.bin").write_bytes(b"?")

    result = run_command(data_dir, "rebuild-index")

    assert result.returncode == 0, result.stderr
    assert "4 instances" in result.stdout and "2 patients" in result.stdout
    assert "Unreadable files, left in place: 1" in result.stdout
    assert "stray.bin" in result.stdout
    assert index_snapshot(data_dir / "index.db") == before
    assert os.listdir(data_dir / "maintenance") == ["rebuild-unreadable.txt"]


@pytest.mark.e2e
def test_rebuild_index_while_the_service_receives(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = make_instances(tmp_path / "first", 40)
    sent: list[tuple[float, str, int]] = []
    stop = threading.Event()

    with running_server(data_dir) as server:
        assert send(server.dicom_port, first) == [0] * len(first)
        sender = threading.Thread(
            target=_keep_sending, args=(server.dicom_port, sent, stop)
        )
        sender.start()
        started = time.monotonic()
        result = run_command(data_dir, "rebuild-index")
        ended = time.monotonic()
        time.sleep(0.5)
        stop.set()
        sender.join()
        server.wait_index_idle()
        with index_reader(data_dir / "index.db") as conn:
            indexed = {row[0] for row in conn.execute("SELECT sop_uid FROM instances")}

    assert result.returncode == 0, result.stderr
    assert "Asked the running service" in result.stderr
    assert "Rebuilt the index" in result.stdout
    during = [uid for when, uid, _ in sent if started <= when <= ended]
    assert len(during) >= 5, "nothing was sent while the rebuild ran"
    assert all(status == 0 for _, _, status in sent)
    missing = {uid for _, uid, _ in sent} - indexed
    assert not missing, f"{len(missing)} instances received during the rebuild lost"
    assert {str(pydicom.dcmread(p).SOPInstanceUID) for p in first} <= indexed


def _keep_sending(
    port: int, sent: list[tuple[float, str, int]], stop: threading.Event
) -> None:
    """Send small instances one by one until `stop`, recording each status."""
    ds = pydicom.dcmread(get_testdata_file("OBXXXX1A.dcm"))
    ae = AE(ae_title=SENDER_AE)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="APPLIANCE")
    assert assoc.is_established
    try:
        while not stop.is_set():
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            status = assoc.send_c_store(ds)
            sent.append((time.monotonic(), str(ds.SOPInstanceUID), int(status.Status)))
            time.sleep(0.02)
    finally:
        assoc.release()
