"""Push files with DCMTK's ``storescu`` and measure the receiver meanwhile.

``storescu -xy`` proposes JPEG Baseline in a context of its own next to the
uncompressed syntaxes, so the cine clips travel as they are stored and no
pixel data is transcoded on the way.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from _peers import LOOPBACK, SENDER_AE, Peer

logger = logging.getLogger(__name__)

STORESCU = "/usr/bin/storescu"
PUSH_TIMEOUT = 900.0
SAMPLE_INTERVAL = 0.02
RSS_SETTLE = 2.0


@dataclass(frozen=True)
class Push:
    """What one push took: wall-clock seconds and the receiver's peak RSS."""

    seconds: float
    peak_rss_bytes: int | None


def push(target: Path, peer: Peer, *, sample_rss: bool = False) -> Push:
    """Send `target` (a file, or a folder sent whole) to `peer`.

    With `sample_rss`, the receiver's resident memory summed over its process
    tree is sampled while ``storescu`` runs; the peak reported is the larger
    of that and the highest VmHWM in the tree two seconds later. Timed runs
    leave it off, so that sampling costs them nothing.

    Parameters
    ----------
    target : pathlib.Path
        A DICOM file, or a folder searched recursively (``+sd +r``).
    peer : Peer
        The running receiver.
    sample_rss : bool, optional
        Whether to measure the receiver's peak RSS.

    Returns
    -------
    Push
        The wall-clock time of the whole ``storescu`` run, and the peak RSS
        in bytes or None.

    Raises
    ------
    RuntimeError
        If ``storescu`` exits non-zero or reports an error or a failure.
    """
    with tempfile.TemporaryFile() as output:
        start = time.perf_counter()
        process = subprocess.Popen(
            _storescu_argv(target, peer),
            env=_sender_env(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            sampled = _wait(process, peer.pid if sample_rss else None)
        finally:
            _stop_sender(process)
        seconds = time.perf_counter() - start

        output.seek(0)
        _check(process.returncode, output.read().decode(errors="replace"), peer)

    if not sample_rss:
        return Push(seconds, None)

    # Work the receiver does after its last response also counts
    time.sleep(RSS_SETTLE)
    peak = max(sampled, max(map(_vm_hwm, _process_tree(peer.pid)), default=0))
    return Push(seconds, peak)


def _storescu_argv(target: Path, peer: Peer) -> list[str]:
    """Return the ``storescu`` command line that sends `target` to `peer`."""
    argv = [STORESCU, "-aet", SENDER_AE, "-aec", peer.ae_title, "-xy"]
    if target.is_dir():
        argv += ["+sd", "+r"]
    return argv + [LOOPBACK, str(peer.port), str(target)]


def _sender_env() -> dict[str, str]:
    """Return this environment without DCMTK's ``TCP_NODELAY`` switch.

    The sender stays as shipped for every receiver, whatever the shell says.
    """
    return {key: value for key, value in os.environ.items() if key != "TCP_NODELAY"}


def _wait(process: subprocess.Popen[bytes], pid: int | None) -> int:
    """Wait for `process`; return the peak RSS of `pid`'s tree, if given."""
    if pid is None:
        _wait_without_polling(process)
        return 0
    return _sample_until_exit(process, pid)


def _wait_without_polling(process: subprocess.Popen[bytes]) -> None:
    """Wait for `process` to exit, killing it after :data:`PUSH_TIMEOUT`.

    ``Popen.wait`` with a time-out polls, at most every 50 ms, which rounded
    every timed push up to the next poll; a plain ``wait`` returns the
    moment the process exits, and a timer enforces the time-out instead.
    """
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        process.kill()

    watchdog = threading.Timer(PUSH_TIMEOUT, expire)
    watchdog.start()
    try:
        process.wait()
    finally:
        watchdog.cancel()
    if expired.is_set():
        raise TimeoutError(f"storescu ran longer than {PUSH_TIMEOUT} s")


def _sample_until_exit(process: subprocess.Popen[bytes], pid: int) -> int:
    """Wait for `process`, sampling the RSS of `pid`'s tree; return the peak."""
    deadline = time.monotonic() + PUSH_TIMEOUT
    peak = 0
    while process.poll() is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"storescu ran longer than {PUSH_TIMEOUT} s")
        peak = max(peak, sum(map(_vm_rss, _process_tree(pid))))
        time.sleep(SAMPLE_INTERVAL)
    return peak


def _stop_sender(process: subprocess.Popen[bytes]) -> None:
    """Kill `process` if it still runs, and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


def _check(returncode: int, output: str, peer: Peer) -> None:
    """Raise if ``storescu`` failed; DCMTK marks errors ``E:`` and ``F:``."""
    errors = [line for line in output.splitlines() if line[:2] in ("E:", "F:")]
    if returncode == 0 and not errors:
        return

    detail = "; ".join(errors[:5]) or output.strip()[-500:]
    raise RuntimeError(
        f"storescu to {peer.name} exited with status {returncode}: {detail}"
    )


def _process_tree(pid: int) -> list[int]:
    """Return `pid` and all its descendants that still run."""
    tree = [pid]
    # The loop also visits the children it appends, down to the leaves
    for parent in tree:
        tree.extend(_children(parent))
    return tree


def _children(pid: int) -> list[int]:
    """Return the children of every thread of `pid` (Linux /proc)."""
    children: list[int] = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children.extend(int(child) for child in path.read_text().split())
        except OSError:
            continue
    return children


def _vm_rss(pid: int) -> int:
    """Return the resident set size of `pid` in bytes, 0 if it is gone."""
    return _status_bytes(pid, "VmRSS")


def _vm_hwm(pid: int) -> int:
    """Return the peak resident set size of `pid` in bytes, 0 if it is gone."""
    return _status_bytes(pid, "VmHWM")


def _status_bytes(pid: int, field: str) -> int:
    """Return a ``kB`` field of ``/proc/PID/status`` in bytes."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0

    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0
