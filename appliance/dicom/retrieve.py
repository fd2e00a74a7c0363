"""Query/Retrieve C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3).

C-MOVE sends only to registered modalities that have a host and a port;
any other Move Destination is refused with 0xA801 (PS3.4 C.4.2.1.4.1).
C-GET sends back on the requesting association, on the storage contexts the
peer proposed (with SCP/SCU Role Selection, PS3.7 D.3.3.4); pynetdicom's
unrestricted storage negotiation accepts those roles.

Files go out as stored, except that the patient is named as the index has
it (corrected, merged or linked to the worklist; see
:mod:`appliance.dicom.coercion`), as C-FIND answered. Only when the peer
accepted none of the stored transfer syntax's contexts for the SOP class but
an uncompressed one, the instance is decompressed with pydicom to Explicit
VR Little Endian (and the log says so); otherwise that sub-operation fails
and is listed in the Failed SOP Instance UID List.

Not done yet: a sub-operation reads the whole file into memory, because
pynetdicom's C-MOVE and C-GET services take a data set, not a file; a
500 MB cine clip costs about twice that while it is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context

from appliance.dicom.access import ModalityLookup
from appliance.dicom.coercion import coerce_patient
from appliance.dicom.query import InvalidQueryError, build_search
from appliance.dicom.responses import describe_peer, request_value
from appliance.index import index_reader
from appliance.index import query as index_query
from appliance.storage import Storage

logger = logging.getLogger(__name__)

PENDING = 0xFF00
CANCELLED = 0xFE00
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_MISMATCH = 0xA900
VERIFICATION = "1.2.840.10008.1.1"
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: odd context IDs 1-255
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

# PS3.4 C.4.2.2.1: the unique key a retrieve at each level must carry.
_UNIQUE_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}

Accepted = set[tuple[str, str]]


@dataclass
class _StoreAssociation:
    """Catches the C-MOVE sub-association, to see what it accepted."""

    accepted: Accepted = field(default_factory=set)

    def capture(self, event: Event) -> None:
        self.accepted = _accepted_as_scu(event.assoc.accepted_contexts)


class Retrieve:
    """Handle ``evt.EVT_C_MOVE`` and ``evt.EVT_C_GET``.

    Parameters
    ----------
    index_path : pathlib.Path
        The ``index.db`` to read.
    storage : Storage
        Where the files are.
    modalities : callable
        Returns the registered modalities: the only Move Destinations.
    """

    def __init__(
        self, index_path: Path, storage: Storage, modalities: ModalityLookup
    ) -> None:
        self._index_path = index_path
        self._storage = storage
        self._modalities = modalities

    def on_move(self, event: Event) -> Iterator[Any]:
        """C-MOVE generator, as pynetdicom expects it; never raises."""
        peer = describe_peer(event)
        destination = self._destination(str(event.move_destination or "").strip())
        if destination is None:
            logger.warning(
                "C-MOVE from %s refused: destination %r is not a registered modality"
                " with host and port",
                peer,
                event.move_destination,
            )
            yield None, None
            return

        rows, failure = self._select(event)
        store = _StoreAssociation()
        handlers = [(evt.EVT_ESTABLISHED, store.capture)]
        # pynetdicom associates with the destination before it takes a
        # failure status, so a refused identifier still needs a context.
        contexts = proposed_contexts(rows) or [build_context(VERIFICATION)]
        yield (*destination, {"contexts": contexts, "evt_handlers": handlers})
        if failure is not None:
            yield 1
            yield failure, None
            return

        logger.info(
            "C-MOVE from %s: %d instance(s) to %s",
            peer,
            len(rows),
            event.move_destination,
        )
        yield len(rows)
        target = f"{event.move_destination} (moved for {peer})"
        yield from self._send(event, rows, lambda: store.accepted, target)

    def on_get(self, event: Event) -> Iterator[Any]:
        """C-GET generator, as pynetdicom expects it; never raises."""
        rows, failure = self._select(event)
        if failure is not None:
            yield 1
            yield failure, None
            return
        logger.info("C-GET from %s: %d instance(s)", describe_peer(event), len(rows))
        yield len(rows)
        accepted = _accepted_as_scu(event.assoc.accepted_contexts)
        yield from self._send(event, rows, lambda: accepted, describe_peer(event))

    def _destination(self, ae_title: str) -> tuple[str, int] | None:
        try:
            known = {m.ae_title: m for m in self._modalities()}
        except Exception:
            logger.exception("Could not read the registered modalities")
            return None
        modality = known.get(ae_title)
        if modality is None or not modality.host or not modality.port:
            return None
        return modality.host, int(modality.port)

    def _select(self, event: Event) -> tuple[list[dict[str, Any]], int | None]:
        """Find the instances a retrieve names; on failure, its status."""
        try:
            search = retrieve_search(
                event.identifier, request_value(event, "AffectedSOPClassUID")
            )
        except InvalidQueryError as exc:
            logger.warning("Refused retrieve from %s: %s", describe_peer(event), exc)
            return [], IDENTIFIER_MISMATCH
        except Exception:
            logger.exception("Unreadable retrieve from %s", describe_peer(event))
            return [], IDENTIFIER_MISMATCH
        try:
            with index_reader(self._index_path) as conn:
                return index_query.find(conn, search), None
        except Exception:
            logger.exception("Index query for a retrieve failed")
            return [], OUT_OF_RESOURCES

    def _send(
        self, event: Event, rows: list[dict[str, Any]], accepted: Any, peer: str
    ) -> Iterator[tuple[int, Dataset | None]]:
        for row in rows:
            if event.is_cancelled:
                logger.info("Retrieve for %s cancelled", peer)
                yield CANCELLED, None
                return
            yield PENDING, self._prepare(row, accepted(), peer)

    def _prepare(self, row: dict[str, Any], accepted: Accepted, peer: str) -> Dataset:
        """The data set to send for one row; one that cannot go fails its send."""
        uid, sop_class = row["SOPInstanceUID"], row["SOPClassUID"]
        stored = str(row["transfer_syntax_uid"] or ExplicitVRLittleEndian)
        plan = choose_plan(sop_class, stored, accepted)
        if plan is None:
            logger.warning(
                "Cannot send %s to %s: it accepted %s neither in %s nor uncompressed",
                uid,
                peer,
                sop_class,
                stored,
            )
            return _unsendable(row)
        try:
            dataset = pydicom.dcmread(self._storage.absolute(row["file_path"]))
            if plan == "decompress":
                # Same instance, other encoding: the UID must not change.
                dataset.decompress(generate_instance_uid=False)
                logger.info(
                    "Decompressed %s from %s to Explicit VR Little Endian for %s,"
                    " which did not accept the stored transfer syntax",
                    uid,
                    stored,
                    peer,
                )
            coerced = coerce_patient(dataset, row)
            if coerced:
                logger.info(
                    "Sending %s to %s with %s as the index has them",
                    uid,
                    peer,
                    ", ".join(coerced),
                )
            return dataset
        except Exception:
            logger.exception("Could not read or decompress %s for %s", uid, peer)
            return _unsendable(row)


def retrieve_search(identifier: Dataset, model: str) -> index_query.Search:
    """Read a C-MOVE or C-GET Identifier into a search for its instances.

    Raises
    ------
    InvalidQueryError
        If the level's unique key is missing, or any key has a wildcard (a
        retrieve names what it wants, PS3.4 C.4.2.2.1).
    """
    search = build_search(identifier, model)
    unique = _UNIQUE_KEY[search.level]
    if not any(key.keyword == unique for key in search.keys):
        raise InvalidQueryError(f"a {search.level} retrieve needs {unique}")
    for key in search.keys:
        if any("*" in v or "?" in v for v in key.values):
            raise InvalidQueryError(f"no wildcard allowed in {key.keyword}")
    return index_query.Search("IMAGE", search.keys)


def proposed_contexts(rows: list[dict[str, Any]]) -> list[PresentationContext]:
    """Contexts for a C-MOVE sub-association: as stored, then uncompressed."""
    exact: dict[tuple[str, str], None] = {}
    for row in rows:
        stored = str(row["transfer_syntax_uid"] or ExplicitVRLittleEndian)
        exact[(row["SOPClassUID"], stored)] = None
    contexts = [
        build_context(sop_class, list(UNCOMPRESSED) if _plain(ts) else [ts])
        for sop_class, ts in exact
    ]
    classes = {sop_class for sop_class, ts in exact if not _plain(ts)}
    contexts += [build_context(c, list(UNCOMPRESSED)) for c in sorted(classes)]
    if len(contexts) > MAX_CONTEXTS:
        logger.warning("C-MOVE needs %d contexts; proposing 128", len(contexts))
    return contexts[:MAX_CONTEXTS]


def choose_plan(sop_class: str, stored: str, accepted: Accepted) -> str | None:
    """Say how to send: ``"as-stored"``, ``"decompress"`` or None (cannot)."""
    if (sop_class, stored) in accepted:
        return "as-stored"
    plain_accepted = any(c == sop_class and _plain(ts) for c, ts in accepted)
    if plain_accepted:
        return "as-stored" if _plain(stored) else "decompress"
    return None


def _plain(transfer_syntax: str) -> bool:
    uid = UID(transfer_syntax)
    return not uid.is_compressed and not uid.is_deflated


def _accepted_as_scu(contexts: list[PresentationContext]) -> Accepted:
    return {
        (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
        for cx in contexts
        if cx.as_scu and cx.transfer_syntax
    }


def _unsendable(row: dict[str, Any]) -> Dataset:
    # Without file meta, pynetdicom's send fails at once, counts the
    # sub-operation as failed and lists the UID (PS3.4 C.4.2.1.4.2).
    stub = Dataset()
    stub.SOPClassUID = row["SOPClassUID"]
    stub.SOPInstanceUID = row["SOPInstanceUID"]
    return stub
