"""Ingest benchmark: storescu into the appliance, a bare receiver and Orthanc.

The requirement it checks: DCMTK's ``storescu`` pushing 200 ultrasound
instances (about 220 MB, a tenth of them cine clips) into the appliance takes
no more than 1.5 times what a bare pynetdicom receiver that only writes the
bytes to disk takes in the same run, and the appliance's peak memory while
receiving a 500 MB clip stays under 250 MB. Orthanc 1.10 is measured beside
them for reference.

The machine is noisy, so the receivers take turns, in a rotating order, for a
number of rounds and the median counts. Every round starts each receiver
afresh on an empty data folder and removes the folder afterwards.

Run it as ``python bench/ingest.py [--rounds N] [--work-dir DIR] [--out FILE]
[--skip-orthanc] [--appliance-cmd CMD]``; it exits 0 when both checks pass.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import _peers
from _dataset import MB, build_ingest_set, build_large_clip, dicom_files, total_size
from _measure import Push, push
from _report import Report, format_report

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "appliance-ingest-bench"
CLIP_BYTES = 500 * MB


@dataclass
class Receiver:
    """A receiver under test and what was measured of it."""

    name: str
    label: str
    start: _peers.PeerStarter | None
    note: str = ""
    seconds: list[float] = field(default_factory=list)
    peak_rss_bytes: int | None = None


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 if both checks pass, else 1."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    work_dir = _prepare_work_dir(args.work_dir)

    # Test data first: building it is not part of any measurement
    folder = build_ingest_set(work_dir)
    files = dicom_files(folder)
    clip = build_large_clip(work_dir, CLIP_BYTES)
    _warm_cache([*files, clip])

    receivers = _receivers(args)
    _run_rounds(receivers, folder, work_dir, args.rounds)
    _measure_memory(receivers, clip, work_dir)

    report = Report(len(files), total_size(files), clip.stat().st_size, args.rounds)
    text, passed = format_report(report, receivers)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if passed else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK_DIR,
        help=f"test data cache and scratch space ({DEFAULT_WORK_DIR})",
    )
    parser.add_argument("--out", type=Path, help="also write the report here")
    parser.add_argument("--skip-orthanc", action="store_true", help="no Orthanc")
    parser.add_argument(
        "--appliance-cmd",
        type=shlex.split,
        help="how to call the appliance, e.g. '.venv/bin/python -m appliance' "
        "(default: 'appliance' beside this Python, else .venv/bin/appliance)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")

    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    return args


def _receivers(args: argparse.Namespace) -> list[Receiver]:
    """Return the receivers to measure; those that cannot run carry a note."""
    baseline = Receiver("baseline", f"baseline ({_pynetdicom()})", _peers.baseline)

    command = args.appliance_cmd or _default_appliance_command()
    appliance = Receiver("appliance", "appliance", None)
    if command:
        appliance.start = _peers.appliance(command)
    else:
        appliance.note = "not run: no appliance command found"

    version = _peers.orthanc_version()
    orthanc = Receiver("orthanc", f"Orthanc {version}, tuned", _peers.orthanc)
    if args.skip_orthanc:
        orthanc.start, orthanc.note = None, "not run: --skip-orthanc"
    elif version is None:
        orthanc.start = None
        orthanc.note = f"not run: {_peers.ORTHANC} missing (apt-get install orthanc)"

    for receiver in (appliance, orthanc):
        if receiver.note:
            logger.warning("Skipping %s: %s", receiver.name, receiver.note)
    return [baseline, appliance, orthanc]


def _run_rounds(
    receivers: list[Receiver], folder: Path, work_dir: Path, rounds: int
) -> None:
    """Push `folder` to each receiver once a round, in a rotating order."""
    for number in range(rounds):
        shift = number % len(receivers)
        for receiver in receivers[shift:] + receivers[:shift]:
            result = _run_once(receiver, folder, work_dir, sample_rss=False)
            if result is not None:
                receiver.seconds.append(result.seconds)
                logger.info(
                    "Round %d: %s took %.2f s",
                    number + 1,
                    receiver.name,
                    result.seconds,
                )


def _measure_memory(receivers: list[Receiver], clip: Path, work_dir: Path) -> None:
    """Push `clip` to a fresh instance of each receiver, sampling its RSS."""
    for receiver in receivers:
        result = _run_once(receiver, clip, work_dir, sample_rss=True)
        if result is not None:
            receiver.peak_rss_bytes = result.peak_rss_bytes
            logger.info(
                "%s peaked at %.0f MB receiving the clip in %.2f s",
                receiver.name,
                (result.peak_rss_bytes or 0) / MB,
                result.seconds,
            )


def _run_once(
    receiver: Receiver, target: Path, work_dir: Path, *, sample_rss: bool
) -> Push | None:
    """Start `receiver` afresh, push `target`, stop it and remove its data.

    A receiver that fails once is not run again; the failure becomes its note.
    """
    if receiver.start is None:
        return None

    run_dir = Path(tempfile.mkdtemp(prefix=f"{receiver.name}-", dir=work_dir / "runs"))
    log_path = work_dir / "logs" / f"{receiver.name}.log"
    try:
        with receiver.start(run_dir, log_path) as peer:
            result = push(target, peer, sample_rss=sample_rss)
            _log_usage(receiver.name, peer.data_dir)
        return result
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        logger.exception("%s failed; it is not run again", receiver.name)
        receiver.start, receiver.note = None, f"failed: {exc}"
        return None
    finally:
        # Flush what the receiver wrote so that it does not slow the next one
        shutil.rmtree(run_dir, ignore_errors=True)
        os.sync()


def _log_usage(name: str, data_dir: Path) -> None:
    """Log how many files and bytes the receiver keeps under `data_dir`."""
    files = [path for path in data_dir.rglob("*") if path.is_file()]
    logger.info(
        "%s keeps %d files, %.1f MB, in its data folder",
        name,
        len(files),
        total_size(files) / MB,
    )


def _prepare_work_dir(work_dir: Path) -> Path:
    """Create the work folder; empty its scratch space and logs."""
    work_dir = work_dir.resolve()
    for scratch in ("runs", "logs"):
        shutil.rmtree(work_dir / scratch, ignore_errors=True)
        (work_dir / scratch).mkdir(parents=True)
    return work_dir


def _warm_cache(paths: list[Path]) -> None:
    """Read `paths` once so that no receiver pays for a cold page cache."""
    for path in paths:
        with path.open("rb") as stream:
            while stream.read(1 << 20):
                pass


def _default_appliance_command() -> list[str] | None:
    """Return the ``appliance`` script beside this Python or in the repo."""
    candidates = (
        Path(sys.executable).parent / "appliance",
        REPO / ".venv" / "bin" / "appliance",
    )
    for candidate in candidates:
        if candidate.exists():
            return [str(candidate)]
    return None


def _pynetdicom() -> str:
    """Return 'pynetdicom' and its version, as the baseline will import it."""
    try:
        return f"pynetdicom {metadata.version('pynetdicom')}"
    except metadata.PackageNotFoundError:
        return "pynetdicom"


if __name__ == "__main__":
    raise SystemExit(main())
