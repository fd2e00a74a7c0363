"""A bare pynetdicom Storage SCP, the ingest benchmark's baseline.

It does the least a receiver can do: it accepts every storage SOP class,
receives each dataset straight to a temporary file and renames that file into
the output folder. Nothing is decoded, indexed or fsynced, so the appliance's
time over this one is the cost of what it adds.

Transfer syntaxes: with ``UNRESTRICTED_STORAGE_SERVICE`` pynetdicom ignores
the supported storage contexts and accepts, for each proposed storage
context, the first transfer syntax the sender proposes (PS3.8 9.3.2.2), so
JPEG Baseline, RLE and the uncompressed syntaxes are all taken as sent.

Run it as ``python bench/baseline_receiver.py --port 11112 --out-dir DIR``;
it serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import cast

from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType

logger = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"  # PS3.4 A.4
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


def handle_conn_open(event: Event) -> None:
    """Turn off Nagle's algorithm on an accepted connection.

    Without TCP_NODELAY the small C-STORE responses wait for the peer's
    delayed ACK, about 40 ms per instance on loopback.

    Parameters
    ----------
    event : pynetdicom.events.Event
        The ``EVT_CONN_OPEN`` event of the new association.
    """
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is None:
        logger.warning("No socket to set TCP_NODELAY on")
        return

    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def handle_store(event: Event, out_dir: Path) -> int:
    """Move the received file into `out_dir`, named by its SOP Instance UID.

    Parameters
    ----------
    event : pynetdicom.events.Event
        The ``EVT_C_STORE`` event; its dataset is already in a temporary file
        in the DICOM File Format.
    out_dir : pathlib.Path
        The folder that keeps the received files.

    Returns
    -------
    int
        The C-STORE status (PS3.4 Table B.2-1).
    """
    request = cast(C_STORE, event.request)
    uid = UID(request.AffectedSOPInstanceUID or "")
    if not uid.is_valid:
        logger.error("Refused an instance with an invalid SOP Instance UID")
        return CANNOT_UNDERSTAND

    try:
        os.replace(event.dataset_path, out_dir / f"{uid}.dcm")
    except OSError:
        logger.exception("Could not keep instance %s", uid)
        return OUT_OF_RESOURCES

    logger.debug("Stored instance %s", uid)
    return SUCCESS


def make_ae() -> AE:
    """Return an AE that accepts Verification and every storage SOP class."""
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    _config.STORE_RECV_CHUNKED_DATASET = True

    ae = AE()
    ae.maximum_pdu_size = 0
    ae.add_supported_context(VERIFICATION)
    return ae


def serve(args: argparse.Namespace) -> None:
    """Serve storage on loopback until SIGTERM or SIGINT."""
    # Temporary files on the output's file system make the move a rename
    incoming = args.out_dir / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(incoming)

    handlers: list[EventHandlerType] = [(evt.EVT_C_STORE, handle_store, [args.out_dir])]
    if not args.no_nodelay:
        handlers.append((evt.EVT_CONN_OPEN, handle_conn_open))

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    server = make_ae().start_server(
        ("127.0.0.1", args.port),
        block=False,
        evt_handlers=handlers,
        ae_title=args.ae_title,
    )
    if server is None:
        raise RuntimeError("pynetdicom returned no server to stop later")

    logger.info("Listening on 127.0.0.1:%d as %s", args.port, args.ae_title)
    stop.wait()
    server.shutdown()
    logger.info("Stopped")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder")
    parser.add_argument("--ae-title", default="BASELINE", help="AE title")
    parser.add_argument(
        "--no-nodelay",
        action="store_true",
        help="leave Nagle's algorithm on, to see what TCP_NODELAY is worth",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the baseline receiver; return the exit status."""
    args = parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # pynetdicom logs every association and request at info level
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)

    serve(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
