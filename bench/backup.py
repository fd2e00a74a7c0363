"""Backup benchmark: an incremental backup against ``cp``, and C-STORE meanwhile.

The requirements it checks (issue 5, item 8):

1. An incremental backup of one new day (about 220 MB, the ingest
   benchmark's set) on top of an archive of 30 such days takes no more than
   1.5 times a plain copy of only the new files, measured in the same run.
2. The median C-STORE time while a backup runs is at most 1.5 times the
   median without one.

The 30 old days are hardlinks of one generated day, and so is the previous
snapshot on the backup folder (built the way the engine would, with its
manifest and database copies): both cost almost no disk space or time. The
new day is received for real, by the appliance, from DCMTK's storescu.

The C-STORE timing runs against the real ``appliance serve`` with its own
nightly job: this script starts it with a SIGUSR1 handler that calls the
job's "Back up now", so the backup runs inside the serving process as it
does at night. Each store is timed by a pynetdicom sender on one
association; a store counts as "during a backup" when a backup held the
backup folder's lock both before and after it.

Run it as ``python bench/backup.py [--rounds N] [--scale F] [--work-dir DIR]
[--out FILE]``; it exits 0 when both checks pass. It checks the free space
first and scales the day down (``--scale``) if the disk is short.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE

# Run as a script, this file's folder comes first on sys.path, and this file
# (bench/backup.py) would hide the backup package: import it without them.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != _BENCH]
from backup import BackupOptions, run_backup  # noqa: E402
from backup.databases import copy_database  # noqa: E402
from backup.files import hash_file  # noqa: E402
from backup.layout import DATABASES, MANIFEST, NAME_FORMAT, PARTIAL_SUFFIX  # noqa: E402
from backup.lock import backup_running  # noqa: E402
from backup.manifest import Entry, ManifestWriter  # noqa: E402
from backup.snapshots import complete, list_snapshots, remove  # noqa: E402

sys.path.append(str(_BENCH))
import _peers  # noqa: E402
from _dataset import MB, IngestPlan, build_ingest_set, dicom_files, total_size  # noqa: E402
from _measure import push  # noqa: E402

logger = logging.getLogger("bench.backup")

DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "appliance-backup-bench"
OLD_DAYS = 30
MAX_RATIO = 1.5
NEEDED_PER_SCALE = 2_500 * MB
STORES_PER_PHASE = 40
STORE_SOURCES = 24
TRIGGER_TIMEOUT = 30.0


@dataclass
class Timings:
    """What was measured, in seconds."""

    backup: list[float] = field(default_factory=list)
    cp: list[float] = field(default_factory=list)
    cp_sync: list[float] = field(default_factory=list)
    store_idle: list[float] = field(default_factory=list)
    store_backup: list[float] = field(default_factory=list)
    new_files: int = 0
    new_bytes: int = 0
    archive_files: int = 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 if both checks pass, else 1."""
    args = parse_args(argv)
    if args.as_appliance is not None:
        return serve_with_trigger(args.as_appliance)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    _one_run_at_a_time(args.work_dir)
    scale = args.scale or choose_scale(args.work_dir)
    plan = _plan(scale)
    old_day = dicom_files(day_set(args.work_dir / f"old-day-{scale}", plan))
    new_day = day_set(args.work_dir / f"new-day-{scale}", replace(plan, seed=2025))

    timings = Timings()
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=args.work_dir))
    try:
        _run(run_dir, old_day, new_day, args.rounds, timings)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    text, passed = report(timings, scale, args.rounds)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if passed else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument(
        "--scale", type=float, help="size of a day, 1.0 = 220 MB (default: fit)"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK_DIR,
        help=f"test data cache and scratch space ({DEFAULT_WORK_DIR})",
    )
    parser.add_argument("--out", type=Path, help="also write the report here")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    parser.add_argument(
        "--as-appliance", nargs=argparse.REMAINDER, help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    return args


def choose_scale(work_dir: Path) -> float:
    """Return 1.0, or less when the work folder's disk is short of room."""
    free = shutil.disk_usage(work_dir).free
    if free >= NEEDED_PER_SCALE:
        return 1.0
    scale = round(free / NEEDED_PER_SCALE * 0.8, 2)
    if scale < 0.05:
        raise SystemExit(f"only {free // MB} MB free in {work_dir}: too little")
    logger.warning("Only %d MB free: the day is scaled to %.2f", free // MB, scale)
    return scale


def _one_run_at_a_time(work_dir: Path) -> None:
    # Two runs would share the cached days and the disk: the second waits.
    # The lock lasts as long as this process.
    fd = os.open(work_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        logger.warning("Another run uses %s: waiting for it", work_dir)
        fcntl.flock(fd, fcntl.LOCK_EX)


def day_set(folder: Path, plan: IngestPlan) -> Path:
    """Return one day's files made to `plan`, rebuilt if the cache lost some."""
    built = build_ingest_set(folder, plan)
    if len(dicom_files(built)) != plan.instances:
        logger.warning("%s misses files: building it again", built)
        built.with_suffix(".json").unlink()
        built = build_ingest_set(folder, plan)
    return built


def serve_with_trigger(argv: list[str]) -> int:
    """Be the ``appliance`` command; ``serve`` also backs up on SIGUSR1."""
    from appliance.cli import main as appliance_main

    if argv[:1] != ["serve"]:
        return appliance_main(argv)

    from appliance.config import load_settings
    from appliance.service import Appliance

    settings = load_settings()
    logging.basicConfig(level=settings.log_level, stream=sys.stderr)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    served = Appliance(settings)
    signal.signal(signal.SIGUSR1, lambda *_: served.backups.start_now("bench"))
    served.serve_until_signalled()
    return 0


def _plan(scale: float) -> IngestPlan:
    base = IngestPlan()
    return IngestPlan(
        instances=max(10, round(base.instances * scale)),
        clips=max(1, round(base.clips * scale)),
        total_bytes=round(base.total_bytes * scale),
    )


def _run(
    run_dir: Path, old_day: list[Path], new_day: Path, rounds: int, timings: Timings
) -> None:
    target = run_dir / "backups"
    target.mkdir()
    os.environ["APPLIANCE_BACKUP_DIR"] = str(target)
    command = [sys.executable, str(Path(__file__).resolve()), "--as-appliance"]
    starter = _peers.appliance(command)
    with starter(run_dir, run_dir / "appliance.log") as peer:
        timings.archive_files = make_archive(peer.data_dir, old_day)
        make_base_snapshot(peer.data_dir, target)
        push(new_day, peer)
        received = _received_today(peer.data_dir)
        if len(received) != len(dicom_files(new_day)):
            raise RuntimeError(f"{len(received)} files stored of {new_day}'s")
        timings.new_files = len(received)
        timings.new_bytes = total_size(received)
        logger.info(
            "Archive: %d old files; new day: %d files, %d MB",
            timings.archive_files,
            timings.new_files,
            timings.new_bytes // MB,
        )
        measure_copies(peer.data_dir, target, run_dir, rounds, timings)
        measure_stores(peer, target, old_day, rounds, timings)


def make_archive(data_dir: Path, day: list[Path]) -> int:
    """Hardlink one day's files into 30 past days of ``storage/``."""
    named = [(path, _stored_name(path)) for path in day]
    today = datetime.now().date()
    for back in range(1, OLD_DAYS + 1):
        folder = data_dir / "storage" / f"{today - timedelta(days=back):%Y/%m/%d}"
        (folder / "STORESCU").mkdir(parents=True)
        for path, name in named:
            os.link(path, folder / "STORESCU" / name)
    return len(day) * OLD_DAYS


def make_base_snapshot(data_dir: Path, target: Path) -> None:
    """Make yesterday's complete snapshot of the archive, all of it hardlinks."""
    yesterday = datetime.now().astimezone() - timedelta(days=1)
    partial = target / (yesterday.strftime(NAME_FORMAT) + PARTIAL_SUFFIX)
    partial.mkdir()
    manifest = ManifestWriter(partial / MANIFEST)
    for name in DATABASES:
        copy_database(data_dir / name, partial / name)
        size = (partial / name).stat().st_size
        manifest.add(Entry(name, size, hash_file(partial / name)))
    for path in sorted((data_dir / "storage").rglob("*.dcm")):
        relative = path.relative_to(data_dir).as_posix()
        (partial / relative).parent.mkdir(parents=True, exist_ok=True)
        os.link(path, partial / relative)
        manifest.add(Entry(relative, path.stat().st_size, path.name.split(".")[-2]))
    manifest.close()
    info = {
        "started_at": yesterday.isoformat(),
        "finished_at": yesterday.isoformat(),
        "files": manifest.count - len(DATABASES),
        "bytes": manifest.bytes,
        "copied_files": 0,
        "copied_bytes": 0,
        "manifest_sha256": hash_file(partial / MANIFEST),
        "source": str(data_dir),
    }
    complete(partial, info)


def measure_copies(
    data_dir: Path, target: Path, run_dir: Path, rounds: int, timings: Timings
) -> None:
    """Time the incremental backup and ``cp`` of the new files, alternately."""
    base = list_snapshots(target)[-1]
    for number in range(rounds):
        steps = [_time_backup, _time_cp]
        for step in steps if number % 2 == 0 else steps[::-1]:
            _settle()
            step(data_dir, target, run_dir, timings)
        logger.info(
            "Round %d: backup %.2f s, cp %.2f s, cp + sync %.2f s",
            number + 1,
            timings.backup[-1],
            timings.cp[-1],
            timings.cp_sync[-1],
        )
    assert list_snapshots(target)[-1].name == base.name


def measure_stores(
    peer: _peers.Peer, target: Path, sources: list[Path], rounds: int, t: Timings
) -> None:
    """Time single C-STOREs with and without a backup in the serving process."""
    datasets = [dcmread(path) for path in sources[:STORE_SOURCES]]
    base = list_snapshots(target)[-1].name
    with _association(peer, datasets) as send:
        for number in range(rounds):
            t.store_idle += [send() for _ in range(STORES_PER_PHASE)]
            t.store_backup += _stores_during_backups(peer, target, base, send)
            logger.info(
                "Round %d: median C-STORE %.1f ms idle, %.1f ms during a backup",
                number + 1,
                statistics.median(t.store_idle) * 1000,
                statistics.median(t.store_backup) * 1000,
            )


def _stores_during_backups(
    peer: _peers.Peer, target: Path, base: str, send: _Sender
) -> list[float]:
    counted: list[float] = []
    while len(counted) < STORES_PER_PHASE:
        _trigger_backup(peer, target, base)
        while backup_running(target) and len(counted) < STORES_PER_PHASE:
            seconds = send()
            if backup_running(target):
                counted.append(seconds)
    _wait_for_backup(target)
    _drop_new_snapshots(target, base)
    return counted


def _trigger_backup(peer: _peers.Peer, target: Path, base: str) -> None:
    # Each run copies the whole new day: the last run's snapshot goes first.
    _wait_for_backup(target)
    _drop_new_snapshots(target, base)
    os.kill(peer.pid, signal.SIGUSR1)
    deadline = time.monotonic() + TRIGGER_TIMEOUT
    while not backup_running(target):
        if time.monotonic() > deadline:
            raise RuntimeError("the appliance did not start a backup on SIGUSR1")
        time.sleep(0.005)


def _wait_for_backup(target: Path) -> None:
    while backup_running(target):
        time.sleep(0.01)


def _drop_new_snapshots(target: Path, base: str) -> None:
    for snapshot in list_snapshots(target):
        if snapshot.name != base:
            remove(snapshot.path)


class _Sender:
    """Sends one data set with fresh UIDs per call; returns the seconds taken."""

    def __init__(self, assoc: Any, datasets: Sequence[Dataset]) -> None:
        self.assoc = assoc
        self.datasets = datasets
        self.count = 0

    def __call__(self) -> float:
        dataset = self.datasets[self.count % len(self.datasets)]
        self.count += 1
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        start = time.perf_counter()
        status = self.assoc.send_c_store(dataset)
        seconds = time.perf_counter() - start
        if getattr(status, "Status", None) != 0:
            raise RuntimeError(f"C-STORE failed: {status}")
        return seconds


class _association:  # noqa: N801 - used as a context manager
    def __init__(self, peer: _peers.Peer, datasets: Sequence[Dataset]) -> None:
        self.ae = AE("STORESCU")
        self.ae.maximum_pdu_size = 0
        for context in {
            (d.SOPClassUID, d.file_meta.TransferSyntaxUID) for d in datasets
        }:
            self.ae.add_requested_context(*context)
        self.peer = peer
        self.datasets = datasets
        self.assoc: Any = None

    def __enter__(self) -> _Sender:
        self.assoc = self.ae.associate(
            _peers.LOOPBACK, self.peer.port, ae_title=self.peer.ae_title
        )
        if not self.assoc.is_established:
            raise RuntimeError("the appliance refused the association")
        return _Sender(self.assoc, self.datasets)

    def __exit__(self, *_exc: object) -> None:
        self.assoc.release()


def _time_backup(data_dir: Path, target: Path, _run_dir: Path, t: Timings) -> None:
    result = run_backup(BackupOptions(data_dir, target, trigger="bench"))
    if not result.ok:
        raise RuntimeError(f"backup failed: {result.error}")
    if result.copied_files != t.new_files:
        raise RuntimeError(f"copied {result.copied_files}, not {t.new_files} files")
    t.backup.append(result.seconds)
    remove(target / result.snapshot)


def _time_cp(data_dir: Path, _target: Path, run_dir: Path, t: Timings) -> None:
    # The same disk and the same files; cp neither hashes, verifies nor syncs.
    today = _today_folder(data_dir)
    destination = run_dir / "cp-copy"
    destination.mkdir()
    start = time.perf_counter()
    subprocess.run(
        ["cp", "-r", "--reflink=never", str(today), str(destination)], check=True
    )
    t.cp.append(time.perf_counter() - start)
    subprocess.run(["sync", "-f", str(destination)], check=True)
    t.cp_sync.append(time.perf_counter() - start)
    shutil.rmtree(destination)


def _settle() -> None:
    # Write out what earlier steps left dirty, so that nobody pays for it.
    os.sync()
    time.sleep(0.5)


def _today_folder(data_dir: Path) -> Path:
    return data_dir / "storage" / f"{datetime.now():%Y/%m/%d}"


def _received_today(data_dir: Path) -> list[Path]:
    return sorted(_today_folder(data_dir).rglob("*.dcm"))


def _stored_name(path: Path) -> str:
    uid = dcmread(path, stop_before_pixels=True).SOPInstanceUID
    return f"{uid}.{hashlib.sha256(path.read_bytes()).hexdigest()}.dcm"


def report(t: Timings, scale: float, rounds: int) -> tuple[str, bool]:
    """Return the markdown report and whether both checks passed."""
    backup, cp, cp_sync = (statistics.median(x) for x in (t.backup, t.cp, t.cp_sync))
    idle = statistics.median(t.store_idle)
    during = statistics.median(t.store_backup)
    checks = [
        (
            backup <= MAX_RATIO * cp_sync,
            f"incremental backup {backup:.2f} s <= {MAX_RATIO} x cp + sync "
            f"{cp_sync:.2f} s (ratio {backup / cp_sync:.2f}; against cp alone, "
            f"{backup / cp:.2f})",
        ),
        (
            during <= MAX_RATIO * idle,
            f"median C-STORE during a backup {during * 1000:.1f} ms <= {MAX_RATIO} x "
            f"{idle * 1000:.1f} ms without (ratio {during / idle:.2f})",
        ),
    ]
    lines = [
        "## Backup benchmark",
        "",
        f"New day: {t.new_files} files, {t.new_bytes / MB:.0f} MB (scale {scale}); "
        f"archive: {t.archive_files} files in {OLD_DAYS} days; {rounds} rounds, "
        "medians.",
        "",
        "| what | seconds |",
        "| --- | --- |",
        f"| incremental backup (copy, fsync, verify, manifest) | {backup:.2f} |",
        f"| cp -r of the new day's folder | {cp:.2f} |",
        f"| cp -r, then sync -f | {cp_sync:.2f} |",
        f"| C-STORE, no backup (median of {len(t.store_idle)}) | {idle:.4f} |",
        f"| C-STORE, backup running (median of {len(t.store_backup)}) | {during:.4f} |",
        "",
    ]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for ok, text in checks]
    return "\n".join(lines), all(ok for ok, _ in checks)


if __name__ == "__main__":
    sys.exit(main())
