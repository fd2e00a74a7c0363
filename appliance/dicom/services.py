"""The DICOM services beyond storage, bound to the listener's events.

Modality Worklist and Query/Retrieve C-FIND share pynetdicom's one C-FIND
event, so :meth:`DicomServices.on_find` sends each request to its handler by
the SOP Class it names. The listener adds :meth:`DicomServices.handlers` to
its own and calls :meth:`DicomServices.stop` when it stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import evt
from pynetdicom.events import Event

from appliance.dicom.access import ModalityLookup
from appliance.dicom.commitment import StorageCommitment
from appliance.dicom.mpps import PerformedStepService
from appliance.dicom.query import QueryFind
from appliance.dicom.responses import request_value
from appliance.dicom.retrieve import Retrieve
from appliance.dicom.worklist import WorklistFind
from appliance.storage import Storage

logger = logging.getLogger(__name__)

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"


@dataclass(frozen=True)
class ServiceOptions:
    """What the services need to know of the appliance."""

    ae_title: str
    index_db: Path
    app_db: Path
    worklist_stale_days: int
    network_timeout: float


class DicomServices:
    """Worklist, MPPS, Storage Commitment and Query/Retrieve for the listener.

    Parameters
    ----------
    options : ServiceOptions
        AE title, databases and limits.
    storage : Storage
        The stored files, for retrieves.
    modalities : callable
        Returns the registered modalities (C-MOVE destinations, commitment
        reports).
    """

    def __init__(
        self, options: ServiceOptions, storage: Storage, modalities: ModalityLookup
    ) -> None:
        self.worklist = WorklistFind(
            options.app_db, lambda: options.worklist_stale_days
        )
        self.query = QueryFind(options.index_db, storage, options.ae_title)
        self.retrieve = Retrieve(options.index_db, storage, modalities)
        self.mpps = PerformedStepService(options.app_db)
        self.commitment = StorageCommitment(
            options.index_db,
            modalities,
            options.ae_title,
            options.network_timeout,
            app_db=options.app_db,
        )

    def handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        """Return the (event, handler) pairs to bind on the listener."""
        return [
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_MOVE, self.retrieve.on_move),
            (evt.EVT_C_GET, self.retrieve.on_get),
            (evt.EVT_N_CREATE, self.mpps.on_create),
            (evt.EVT_N_SET, self.mpps.on_set),
            (evt.EVT_N_ACTION, self.commitment.on_action),
            (evt.EVT_DIMSE_SENT, self.commitment.on_dimse_sent),
            (evt.EVT_PDU_SENT, self.commitment.on_pdu_sent),
            (evt.EVT_RELEASED, self.commitment.on_ended),
            (evt.EVT_ABORTED, self.commitment.on_ended),
        ]

    def on_find(self, event: Event) -> Iterator[Any]:
        """Send a C-FIND to the worklist or to Query/Retrieve."""
        if request_value(event, "AffectedSOPClassUID") == MODALITY_WORKLIST_FIND:
            return self.worklist(event)
        return self.query(event)

    def stop(self) -> None:
        """Stop background work (commitment reports)."""
        self.commitment.stop()
