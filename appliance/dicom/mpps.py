"""Modality Performed Procedure Step SCP: N-CREATE and N-SET (PS3.4 F.7).

The modality creates a step IN PROGRESS when the examination starts and
sets it COMPLETED or DISCONTINUED when it ends. Each step is stored in
``app.db`` and linked, through its Scheduled Step Attribute Sequence, to the
worklist entries it performs, whose status follows it. A step that names no
known entry (an unscheduled examination) is stored all the same.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.events import Event

from appliance import db
from appliance.dicom.responses import describe_peer, request_value, status
from appliance.state.mpps import DuplicateStepError, create_step, get_step, update_step
from appliance.state.worklist import Status, entries_for_step

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_INSTANCE = 0x0111
NO_SUCH_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
# PS3.4 F.7.2.2.2: "Performed Procedure Step Object may no longer be updated".
NO_LONGER_UPDATABLE = 0xA710

Reply = tuple[int | Dataset, Dataset | None]


class PerformedStepService:
    """Handle ``evt.EVT_N_CREATE`` and ``evt.EVT_N_SET`` for MPPS.

    Parameters
    ----------
    app_db : pathlib.Path
        The state database.
    """

    def __init__(self, app_db: Path) -> None:
        self._app_db = app_db

    def on_create(self, event: Event) -> Reply:
        """Create a step IN PROGRESS (PS3.4 F.7.2.1); never raises."""
        try:
            return self._create(event)
        except Exception:
            logger.exception("MPPS N-CREATE from %s failed", describe_peer(event))
            return PROCESSING_FAILURE, None

    def on_set(self, event: Event) -> Reply:
        """Update, complete or discontinue a step (PS3.4 F.7.2.2); never raises."""
        try:
            return self._set(event)
        except Exception:
            logger.exception("MPPS N-SET from %s failed", describe_peer(event))
            return PROCESSING_FAILURE, None

    def _create(self, event: Event) -> Reply:
        requested = request_value(event, "AffectedSOPInstanceUID")
        uid = requested or generate_uid()
        attributes = event.attribute_list
        state = str(attributes.get("PerformedProcedureStepStatus", "") or "")
        if state != Status.IN_PROGRESS.value:
            logger.warning(
                "MPPS N-CREATE %s from %s refused: status %r, not IN PROGRESS",
                uid,
                describe_peer(event),
                state,
            )
            return status(INVALID_ATTRIBUTE_VALUE, "status must be IN PROGRESS"), None

        with closing(db.connect(self._app_db)) as conn:
            entries = _scheduled_entries(conn, attributes)
            try:
                create_step(
                    conn,
                    uid,
                    event.assoc.requestor.ae_title,
                    attributes.to_json(),
                    entries,
                )
            except DuplicateStepError:
                logger.warning("MPPS N-CREATE %s: duplicate instance", uid)
                return DUPLICATE_INSTANCE, None

        logger.info(
            "MPPS %s IN PROGRESS from %s, worklist entries %s",
            uid,
            describe_peer(event),
            entries or "none (unscheduled)",
        )
        if requested:
            return SUCCESS, None
        reply = Dataset()
        reply.AffectedSOPInstanceUID = uid
        return SUCCESS, reply

    def _set(self, event: Event) -> Reply:
        uid = request_value(event, "RequestedSOPInstanceUID")
        changes = event.modification_list
        with closing(db.connect(self._app_db)) as conn:
            step = get_step(conn, uid)
            if step is None:
                logger.warning("MPPS N-SET for unknown instance %s", uid)
                return NO_SUCH_INSTANCE, None
            if step.status is not Status.IN_PROGRESS:
                logger.warning("MPPS N-SET for %s, already %s", uid, step.status.value)
                comment = "Performed Procedure Step may no longer be updated"
                return status(PROCESSING_FAILURE, comment, NO_LONGER_UPDATABLE), None

            new_state = str(
                changes.get("PerformedProcedureStepStatus", step.status.value) or ""
            )
            if new_state not in {s.value for s in Status} - {"SCHEDULED"}:
                logger.warning("MPPS N-SET for %s: invalid status %r", uid, new_state)
                return status(INVALID_ATTRIBUTE_VALUE, "invalid status"), None

            merged = Dataset.from_json(step.attributes)
            for element in changes:
                merged[element.tag] = element
            update_step(conn, uid, Status(new_state), merged.to_json())

        logger.info(
            "MPPS %s set %s by %s, worklist entries %s",
            uid,
            new_state,
            describe_peer(event),
            list(step.worklist_ids) or "none",
        )
        return SUCCESS, None


def _scheduled_entries(conn: sqlite3.Connection, attributes: Dataset) -> list[int]:
    """The worklist entries named by the Scheduled Step Attribute Sequence."""
    found: list[int] = []
    for item in attributes.get("ScheduledStepAttributesSequence", None) or []:
        ids = entries_for_step(
            conn,
            str(item.get("ScheduledProcedureStepID", "") or ""),
            str(item.get("AccessionNumber", "") or ""),
            str(item.get("StudyInstanceUID", "") or ""),
        )
        found.extend(i for i in ids if i not in found)
    return found
