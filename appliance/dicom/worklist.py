"""Modality Worklist SCP: C-FIND on the scheduled procedures (PS3.4 K.6).

Every open entry of ``app.db`` (not done, not stale) is turned into the
data set of PS3.4 Table K.6-1, then matched against the request with
:func:`appliance.dicom.matching.match`: the modality's usual keys (the
Scheduled Procedure Step Sequence's start date range, station AE title and
modality, wildcards on names and IDs) all work. Worklists are small (a
day's patients), so entries are matched in Python, not in SQL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.events import Event

from appliance import db
from appliance.dicom import matching
from appliance.dicom.responses import describe_peer, finish_response
from appliance.state.worklist import Status, WorklistEntry, open_entries

logger = logging.getLogger(__name__)

PENDING = 0xFF00
CANCELLED = 0xFE00
OUT_OF_RESOURCES = 0xA700
UNABLE_TO_PROCESS = 0xC000

FindResult = tuple[int, Dataset | None]

# PS3.3 C.4.10.1: an entry IN PROGRESS has STARTED its scheduled step.
_SPS_STATUS = {Status.SCHEDULED: "SCHEDULED", Status.IN_PROGRESS: "STARTED"}


class WorklistFind:
    """Handle C-FIND on the Modality Worklist Information Model.

    Parameters
    ----------
    app_db : pathlib.Path
        The state database holding the entries.
    stale_days : callable
        Returns how many days back entries are still offered.
    """

    def __init__(self, app_db: Path, stale_days: Callable[[], int]) -> None:
        self._app_db = app_db
        self._stale_days = stale_days

    def __call__(self, event: Event) -> Iterator[FindResult]:
        """Yield a Pending response per matching entry; never raises."""
        started = time.monotonic()
        try:
            identifier = event.identifier
        except Exception:
            logger.exception("Unreadable worklist query from %s", describe_peer(event))
            yield UNABLE_TO_PROCESS, None
            return
        try:
            with closing(db.connect(self._app_db, readonly=True)) as conn:
                entries = open_entries(conn, self._stale_days())
        except Exception:
            logger.exception("Could not read the worklist for %s", describe_peer(event))
            yield OUT_OF_RESOURCES, None
            return

        yield from self._answer(event, identifier, entries, started)

    def _answer(
        self,
        event: Event,
        identifier: Dataset,
        entries: list[WorklistEntry],
        started: float,
    ) -> Iterator[FindResult]:
        sent = 0
        for entry in entries:
            if event.is_cancelled:
                logger.info("Worklist query from %s cancelled", describe_peer(event))
                yield CANCELLED, None
                return
            try:
                response = matching.match(identifier, entry_dataset(entry))
            except Exception:
                logger.exception("Could not match worklist entry %d", entry.id)
                yield UNABLE_TO_PROCESS, None
                return
            if response is not None:
                sent += 1
                yield PENDING, finish_response(response, identifier)
        logger.info(
            "Worklist query from %s: %d of %d open entries matched, %.0f ms",
            describe_peer(event),
            sent,
            len(entries),
            (time.monotonic() - started) * 1000,
        )


def entry_dataset(entry: WorklistEntry) -> Dataset:
    """Build the worklist item of one entry (PS3.4 Table K.6-1)."""
    step = Dataset()
    step.ScheduledStationAETitle = entry.station_ae
    step.ScheduledProcedureStepStartDate = entry.scheduled_date
    step.ScheduledProcedureStepStartTime = entry.scheduled_time
    step.Modality = entry.modality
    step.ScheduledPerformingPhysicianName = ""
    step.ScheduledProcedureStepDescription = entry.description
    step.ScheduledStationName = ""
    step.ScheduledProcedureStepLocation = ""
    step.ScheduledProtocolCodeSequence = Sequence([])
    step.ScheduledProcedureStepID = entry.sps_id
    step.ScheduledProcedureStepStatus = _SPS_STATUS.get(entry.status, "")

    item = Dataset()
    item.ScheduledProcedureStepSequence = Sequence([step])
    item.RequestedProcedureID = entry.requested_procedure_id
    item.RequestedProcedureDescription = entry.description
    item.RequestedProcedureCodeSequence = Sequence([])
    item.RequestedProcedurePriority = ""
    item.StudyInstanceUID = entry.study_uid
    item.ReferencedStudySequence = Sequence([])
    item.AccessionNumber = entry.accession_number
    item.ReferringPhysicianName = ""
    item.RequestingPhysician = ""
    item.AdmissionID = ""
    item.PatientName = entry.patient_name
    item.PatientID = entry.patient_id
    item.IssuerOfPatientID = entry.issuer
    item.PatientBirthDate = entry.birth_date
    item.PatientSex = entry.sex
    item.OtherPatientIDsSequence = Sequence([])
    return item
