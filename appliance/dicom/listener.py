"""The DICOM listener: one pynetdicom server for the modality and workstations.

It accepts associations only from registered modalities, answers C-ECHO, and
stores C-STORE data sets through :class:`~appliance.dicom.store.StoreHandler`.
A stop is graceful: no new associations, stores in flight finish with a
status, and only then are idle associations aborted.

A connection that sends no A-ASSOCIATE-RQ is closed after
:data:`FIRST_PDU_TIMEOUT` and, until it asks, takes none of the association
slots (see :mod:`~appliance.dicom.access`), so idle sockets cannot lock the
modality out.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from appliance.dicom import contexts, spooling
from appliance.dicom.access import GatedApplicationEntity, ModalityLookup
from appliance.dicom.dul_wait import wake_on_data
from appliance.dicom.services import DicomServices
from appliance.dicom.socket_reads import read_in_large_steps
from appliance.dicom.store import SUCCESS, StoreHandler, StoreResult
from appliance.index import IndexWriter
from appliance.storage import Storage

logger = logging.getLogger(__name__)

# The largest PDU we accept. FIELD-NOTES suggests 0 (unlimited) for speed, but
# a peer then sends a whole data set as one PDU, which pynetdicom holds in
# memory several times over (measured: 2 GB of RSS for a 490 MB clip sent by
# pynetdicom). One MiB keeps memory flat per association and costs no
# measurable speed: the per-PDU overhead is six bytes.
MAX_PDU_BYTES = 1 << 20

# Seconds a new connection has to send its A-ASSOCIATE-RQ (pynetdicom's ARTIM
# timer, PS3.8 9.1.5). A modality sends it at once; a port scanner or a broken
# peer sends nothing, and must not keep a thread for the full ACSE_TIMEOUT.
FIRST_PDU_TIMEOUT = 5.0

# Seconds to wait for the other ACSE messages once the association is asked
# for (the A-ASSOCIATE, A-RELEASE and A-ABORT exchanges).
ACSE_TIMEOUT = 30.0


@dataclass
class AssociationStats:
    """What one association did, for its summary line."""

    stored: int = 0
    refused: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, result: StoreResult) -> None:
        """Count one C-STORE result."""
        if result.status == SUCCESS:
            self.stored += 1
        else:
            self.refused += 1
        self.bytes += result.size


@dataclass(frozen=True)
class ListenerOptions:
    """How the listener presents itself on the network."""

    ae_title: str
    host: str
    port: int
    max_associations: int
    network_timeout: int


class Listener:
    """The appliance's DICOM service.

    Parameters
    ----------
    options : ListenerOptions
        AE title, address and limits.
    storage : Storage
        Where received files go.
    writer : IndexWriter
        The index's one writer.
    modalities : callable
        Returns the registered modalities, asked on every association.
    services : DicomServices, optional
        Worklist, MPPS, Storage Commitment and Query/Retrieve; without it the
        listener serves C-ECHO and C-STORE only.
    """

    def __init__(
        self,
        options: ListenerOptions,
        storage: Storage,
        writer: IndexWriter,
        modalities: ModalityLookup,
        services: DicomServices | None = None,
    ) -> None:
        self.options = options
        self._services = services
        self._spools = spooling.SpoolRegistry(storage, options.max_associations)
        self._store = StoreHandler(storage, writer, self._spools, self._count)
        self._stats: dict[int, AssociationStats] = {}
        self._stats_lock = threading.Lock()
        self._ae = _build_ae(options, modalities)
        self._server: ThreadedAssociationServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (useful when the port was 0)."""
        if self._server is None:
            raise RuntimeError("the listener is not running")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind the port and serve associations on background threads."""
        spooling.install(self._spools)
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, _on_connection_open),
            (evt.EVT_REQUESTED, _on_requested),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_REJECTED, _on_rejected),
            (evt.EVT_RELEASED, self._on_ended),
            (evt.EVT_ABORTED, self._on_ended),
            (evt.EVT_CONN_CLOSE, self._on_connection_close),
            (evt.EVT_DIMSE_RECV, self._spools.start_sync),
            (evt.EVT_C_ECHO, _on_echo),
            (evt.EVT_C_STORE, self._store),
        ]
        if self._services is not None:
            handlers += self._services.handlers()
        address = (self.options.host, self.options.port)
        self._server = self._ae.start_server(
            address, block=False, evt_handlers=handlers
        )
        logger.info("DICOM listener %s on %s:%d", self.options.ae_title, *self.address)

    def stop(self, grace_seconds: float) -> None:
        """Stop accepting, let stores in flight finish, then close the rest.

        Parameters
        ----------
        grace_seconds : float
            How long to wait for open associations to end by themselves.
        """
        if self._server is None:
            return
        self._server.shutdown()
        deadline = time.monotonic() + grace_seconds
        while self._ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.1)

        remaining = self._ae.active_associations
        if remaining:
            logger.warning("Aborting %d association(s) still open", len(remaining))
        for association in remaining:
            association.abort()
        if not self._store.wait_idle(timeout=max(grace_seconds, 5.0)):
            logger.error("A store was still running when the listener stopped")
        if self._services is not None:
            self._services.stop()
        self._server = None
        logger.info("DICOM listener stopped")

    def _on_established(self, event: Event) -> None:
        with self._stats_lock:
            self._stats[id(event.assoc)] = AssociationStats()
        requestor = event.assoc.requestor
        logger.debug(
            "Association accepted from %s at %s:%s",
            requestor.ae_title,
            requestor.address,
            requestor.port,
        )

    def _count(self, event: Event, result: StoreResult) -> None:
        with self._stats_lock:
            stats = self._stats.get(id(event.assoc))
            if stats is not None:
                stats.add(result)

    def _on_ended(self, event: Event) -> None:
        with self._stats_lock:
            stats = self._stats.pop(id(event.assoc), None) or AssociationStats()
        requestor = event.assoc.requestor
        how = "released" if event.event is evt.EVT_RELEASED else "aborted"
        logger.info(
            "Association from %s at %s:%s %s: %d stored, %d refused, %d bytes, %.0f ms",
            requestor.ae_title,
            requestor.address,
            requestor.port,
            how,
            stats.stored,
            stats.refused,
            stats.bytes,
            (time.monotonic() - stats.started) * 1000,
        )

    def _on_connection_close(self, event: Event) -> None:
        discarded = self._spools.discard_owned_by(event.assoc.dul)
        if discarded:
            logger.warning(
                "Discarded %d incomplete receive(s) from %s",
                discarded,
                event.assoc.requestor.address,
            )


def _build_ae(
    options: ListenerOptions, modalities: ModalityLookup
) -> GatedApplicationEntity:
    ae = GatedApplicationEntity(options.ae_title, modalities)
    ae.maximum_associations = options.max_associations
    ae.maximum_pdu_size = MAX_PDU_BYTES
    ae.network_timeout = options.network_timeout
    ae.acse_timeout = ACSE_TIMEOUT
    ae.dimse_timeout = options.network_timeout
    ae.require_called_aet = False
    for abstract_syntax, transfer_syntaxes in contexts.service_contexts():
        ae.add_supported_context(abstract_syntax, transfer_syntaxes)
    return ae


def _on_connection_open(event: Event) -> None:
    # Until the A-ASSOCIATE-RQ arrives, a short ARTIM timeout; _on_requested
    # gives the association the full ACSE timeout back.
    event.assoc.acse_timeout = FIRST_PDU_TIMEOUT

    # Nagle's algorithm against the peer's delayed ACK stalls each small
    # response by ~40 ms; see FIELD-NOTES "pynetdicom traps".
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is None:
        return
    # pynetdicom reads 4 KiB a call, and polls the socket between 1 ms
    # sleeps; see socket_reads and dul_wait for why those cost.
    read_in_large_steps(event.assoc.dul.socket)
    wake_on_data(event.assoc.dul)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        logger.debug("Could not set TCP_NODELAY", exc_info=True)


def _on_requested(event: Event) -> None:
    event.assoc.acse_timeout = ACSE_TIMEOUT


def _on_rejected(event: Event) -> None:
    requestor = event.assoc.requestor
    logger.warning(
        "Association rejected: calling AE %r from %s:%s is not a registered "
        "modality (or the association limit was reached)",
        requestor.ae_title,
        requestor.address,
        requestor.port,
    )


def _on_echo(event: Event) -> int:
    return 0x0000
