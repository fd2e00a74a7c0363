"""Rebuild benchmark: the index rebuild against a bare header scan, and Orthanc.

The requirement it checks (issue 3): rebuilding the index from N stored files
takes no more than 1.5 times a bare pydicom header-only scan of the same files
(``dcmread(stop_before_pixels=True)`` of each) in the same run. Orthanc 1.10
cannot rebuild its index from its files; its only equivalent, re-importing the
same files into a fresh Orthanc (DCMTK ``storescu`` over loopback), is timed
beside them for reference.

The files are laid out in a data folder exactly as the appliance stores them,
copies of the real vendor files of ``pydicom-data`` with fresh UIDs, and read
once before timing so that every contender finds them in the page cache. The
scan and the rebuild take turns for a number of rounds; the median counts.

Run it as ``python bench/rebuild.py [--files N] [--rounds N] [--work-dir DIR]
[--skip-orthanc]``; it exits 0 when the check passes.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import _peers
import pydicom
from _measure import push
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from appliance.index import IndexWriter
from appliance.index.rebuild import Rebuilder, RebuildFiles
from appliance.index.status import RebuildStatus
from appliance.storage import Storage

logger = logging.getLogger(__name__)

DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "appliance-rebuild-bench"
SINGLES = ("US1_UNCR.dcm", "gdcm-US-ALOKA-16.dcm", "OBXXXX1A.dcm")
CLIP = "color3d_jpeg_baseline.dcm"
CLIP_EVERY = 50
PATIENTS = 20
MAX_RATIO = 1.5


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 if the rebuild passes its check."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("appliance").setLevel(logging.ERROR)

    data_dir = _build_data_folder(args.work_dir, args.files)
    storage = Storage(data_dir)
    _warm_cache(storage.files_dir)

    times: dict[str, list[float]] = {"scan": [], "rebuild": []}
    for number in range(args.rounds):
        order = ("scan", "rebuild") if number % 2 == 0 else ("rebuild", "scan")
        for name in order:
            seconds = _scan(storage) if name == "scan" else _rebuild(storage)
            times[name].append(seconds)
            logger.info("Round %d: %s took %.2f s", number + 1, name, seconds)

    orthanc = None if args.skip_orthanc else _orthanc_import(args.work_dir, storage)
    text, passed = _report(args, times, orthanc)
    print(text)
    return 0 if passed else 1


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="files (1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    parser.add_argument("--skip-orthanc", action="store_true", help="no Orthanc")
    args = parser.parse_args(argv)
    if args.files < 1 or args.rounds < 1:
        parser.error("--files and --rounds must be at least 1")
    return args


def _build_data_folder(work_dir: Path, files: int) -> Path:
    """Return a data folder whose storage holds `files` instances, cached."""
    data_dir = work_dir / "data"
    manifest = work_dir / "data.json"
    key = {"files": files, "clip_every": CLIP_EVERY, "patients": PATIENTS}
    try:
        if json.loads(manifest.read_text()) == key:
            return data_dir
    except (OSError, ValueError):
        pass

    logger.info("Storing %d instances in %s", files, data_dir)
    manifest.unlink(missing_ok=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    storage = Storage(data_dir)
    storage.prepare()
    sources = {name: pydicom.dcmread(_source(name)) for name in (*SINGLES, CLIP)}
    studies = [
        (f"BENCH{n // 2:03d}", generate_uid(), generate_uid())
        for n in range(PATIENTS * 2)
    ]
    for number in range(files):
        name = CLIP if number % CLIP_EVERY == CLIP_EVERY - 1 else SINGLES[number % 3]
        _store(storage, sources[name], studies[number % len(studies)], number)
    manifest.write_text(json.dumps(key))
    return data_dir


def _store(
    storage: Storage, ds: pydicom.Dataset, study: tuple[str, str, str], number: int
) -> None:
    """Store one renamed copy of `ds` as the appliance does (spool, rename)."""
    patient_id, study_uid, series_uid = study
    ds.PatientID, ds.PatientName = patient_id, f"BENCH^{patient_id}"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = number + 1
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    spool = storage.new_spool()
    spool.write(buffer.getvalue())
    spool.finish()
    received = datetime.fromtimestamp(os.stat(spool.path).st_mtime)
    relative = storage.relative_path(
        received, "BENCH", str(ds.SOPInstanceUID), spool.sha256
    )
    storage.commit(spool, relative)
    spool.close()


def _scan(storage: Storage) -> float:
    """Time a bare header-only read of every stored file."""
    start = time.perf_counter()
    for folder, _subfolders, names in os.walk(storage.files_dir):
        for name in names:
            pydicom.dcmread(os.path.join(folder, name), stop_before_pixels=True)
    return time.perf_counter() - start


def _rebuild(storage: Storage) -> float:
    """Time a rebuild of a fresh index from the stored files."""
    for leftover in storage.data_dir.glob("index.db*"):
        leftover.unlink()
    shutil.rmtree(storage.data_dir / "maintenance", ignore_errors=True)
    writer = IndexWriter(storage.data_dir / "index.db")
    writer.start()
    try:
        files = RebuildFiles(writer.path, storage.data_dir / "maintenance")
        rebuilder = Rebuilder(storage, files, writer, RebuildStatus(), list)
        start = time.perf_counter()
        summary = rebuilder.run("benchmark")
        seconds = time.perf_counter() - start
    finally:
        writer.stop()
    if summary is None or summary.unreadable:
        raise RuntimeError(f"the rebuild did not index every file: {summary}")
    return seconds


def _orthanc_import(work_dir: Path, storage: Storage) -> float | str:
    """Time re-importing the files into a fresh Orthanc, or say why not."""
    version = _peers.orthanc_version()
    if version is None:
        return f"not run: {_peers.ORTHANC} missing (apt-get install orthanc)"
    run_dir = Path(tempfile.mkdtemp(prefix="orthanc-", dir=work_dir))
    try:
        with _peers.orthanc(run_dir, work_dir / "orthanc.log") as peer:
            return push(storage.files_dir, peer).seconds
    except (OSError, RuntimeError, TimeoutError) as exc:
        logger.exception("Orthanc failed")
        return f"failed: {exc}"
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _report(
    args: argparse.Namespace,
    times: dict[str, list[float]],
    orthanc: float | str | None,
) -> tuple[str, bool]:
    scan = statistics.median(times["scan"])
    rebuild = statistics.median(times["rebuild"])
    ratio = rebuild / scan
    lines = [
        "## Rebuild benchmark",
        "",
        f"{args.files} stored ultrasound instances (one in {CLIP_EVERY} a cine "
        f"clip), page cache warm; median of {args.rounds} rounds.",
        "",
        "| method | median s | rounds s | files/s | vs scan |",
        "|---|---:|---|---:|---:|",
        _row("bare pydicom header scan", times["scan"], args.files, scan),
        _row("appliance rebuild", times["rebuild"], args.files, scan),
    ]
    if isinstance(orthanc, float):
        lines.append(_row("Orthanc re-import (storescu)", [orthanc], args.files, scan))
    elif orthanc:
        lines.append(f"| Orthanc re-import | {orthanc} | | | |")
    passed = ratio <= MAX_RATIO
    verdict = "PASS" if passed else "FAIL"
    lines += ["", f"- {verdict}: rebuild takes {ratio:.2f}x the scan (limit 1.50x)"]
    return "\n".join(lines), passed


def _row(label: str, seconds: list[float], files: int, scan: float) -> str:
    median = statistics.median(seconds)
    rounds = " ".join(f"{value:.2f}" for value in seconds)
    return (
        f"| {label} | {median:.2f} | {rounds} | {files / median:,.0f} "
        f"| {median / scan:.2f}x |"
    )


def _warm_cache(folder: Path) -> None:
    for root, _subfolders, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as stream:
                while stream.read(1 << 20):
                    pass


def _source(name: str) -> str:
    path = get_testdata_file(name)
    if not isinstance(path, str):
        raise FileNotFoundError(f"pydicom-data has no test file {name!r}")
    return path


if __name__ == "__main__":
    sys.exit(main())
