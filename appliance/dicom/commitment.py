"""Storage Commitment Push Model SCP: N-ACTION, then N-EVENT-REPORT (PS3.4 J.3).

The modality asks, with N-ACTION, that a list of instances be committed.
The appliance answers the N-ACTION at once, then checks each instance in
the index: an instance is in the index only once its file is durably stored
and indexed (:mod:`appliance.dicom.store`), so that is the test. It then
reports with N-EVENT-REPORT (J.3.3): Event Type 1 when all are committed,
2 when some are in the Failed SOP Sequence.

The report goes on the requesting association if it is still open, else on
a new association to the modality's registered host (or the address it
called from) and port, proposing the SCP role for Storage Commitment
(PS3.4 J.3.3, PS3.7 D.3.3.4). A failed delivery is retried a few times.

The report must follow the N-ACTION response on the wire, never overtake
it: the request is armed when pynetdicom encodes the response
(``EVT_DIMSE_SENT``) and handed to a worker thread when the response's PDU
has been written (``EVT_PDU_SENT``).

Every request is kept in ``app.db`` (:mod:`appliance.state.commitments`)
until its report is delivered. One that the first attempts could not
deliver (the modality is off, or the appliance stopped meanwhile) is tried
again by :meth:`StorageCommitment.retry_owed`, which the service runs at
start and every :data:`RETRY_EVERY` after, for :data:`GIVE_UP_AFTER`; the
outcome is read from the index again at each attempt.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dimse_messages import N_ACTION_RSP
from pynetdicom.events import Event
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.presentation import build_role

from appliance import db
from appliance.dicom.access import ModalityLookup
from appliance.dicom.responses import describe_peer, request_value
from appliance.index import index_reader
from appliance.index.query import stored_instances
from appliance.state import commitments
from appliance.state.commitments import OwedReport

logger = logging.getLogger(__name__)

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # well-known, PS3.4 J.3.5
REQUEST_COMMITMENT = 1  # Action Type ID, PS3.4 J.3.2.1
ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type ID, PS3.4 J.3.3.1

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
NO_SUCH_INSTANCE = 0x0112
INVALID_ARGUMENT = 0x0115
CLASS_INSTANCE_CONFLICT = 0x0119
NO_SUCH_ACTION = 0x0123

RETRY_DELAYS = (0.0, 5.0, 30.0)
# After those, a report still owed is tried this often, for this long.
RETRY_EVERY = timedelta(minutes=10)
GIVE_UP_AFTER = timedelta(days=1)
# A modality that releases as soon as it has the N-ACTION response expects
# the report on a new association; this long is left for its A-RELEASE-RQ
# to arrive before the same association is used.
SETTLE_SECONDS = 0.2


@dataclass
class CommitRequest:
    """One N-ACTION to answer with a report."""

    transaction_uid: str
    references: list[tuple[str, str]]
    """(SOP Class UID, SOP Instance UID) pairs, in the order asked."""
    requestor_ae: str
    requestor_address: str
    association: Any
    """The requesting association; None for a report owed from before."""
    asked_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class StorageCommitment:
    """Handle Storage Commitment for the listener.

    Parameters
    ----------
    index_path : pathlib.Path
        The ``index.db`` that says what is committed.
    modalities : callable
        Returns the registered modalities (host and port for new associations).
    ae_title : str
        The appliance's AE title, calling the modality back.
    timeout : float
        Seconds for each network step of a report.
    retry_delays : sequence of float
        Waits before each attempt on a new association.
    app_db : pathlib.Path, optional
        Where reports are kept until delivered; None keeps them in memory
        only, for as long as their first attempts last.
    """

    def __init__(
        self,
        index_path: Path,
        modalities: ModalityLookup,
        ae_title: str,
        timeout: float = 30.0,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        app_db: Path | None = None,
    ) -> None:
        self._index_path = index_path
        self._app_db = app_db
        self._modalities = modalities
        self._ae_title = ae_title
        self._timeout = timeout
        self._retry_delays = tuple(retry_delays)
        self._lock = threading.Lock()
        self._awaiting: dict[tuple[int, int], CommitRequest] = {}
        self._armed: dict[int, list[CommitRequest]] = {}
        self._stopping = threading.Event()
        self._in_flight: set[str] = set()
        self._workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="commit")

    def on_action(self, event: Event) -> tuple[int, Dataset | None]:
        """Accept a commitment request (PS3.4 J.3.2); never raises."""
        try:
            return self._accept(event)
        except Exception:
            logger.exception("Storage commitment from %s failed", describe_peer(event))
            return PROCESSING_FAILURE, None

    def on_dimse_sent(self, event: Event) -> None:
        """Arm a report once the N-ACTION response to it is being sent."""
        message = event.message
        if not isinstance(message, N_ACTION_RSP):
            return
        responded_to = int(
            getattr(message.command_set, "MessageIDBeingRespondedTo", -1)
        )
        key = (id(event.assoc), responded_to)
        with self._lock:
            request = self._awaiting.pop(key, None)
            if request is not None:
                self._armed.setdefault(id(event.assoc), []).append(request)

    def on_pdu_sent(self, event: Event) -> None:
        """Start armed reports once the response's PDU is on the wire."""
        if not isinstance(event.pdu, P_DATA_TF):
            return
        with self._lock:
            requests = self._armed.pop(id(event.assoc), [])
        for request in requests:
            self._workers.submit(self._report, request)

    def on_ended(self, event: Event) -> None:
        """Forget what an ended association never got to send."""
        key = id(event.assoc)
        with self._lock:
            self._armed.pop(key, None)
            for pending in [k for k in self._awaiting if k[0] == key]:
                del self._awaiting[pending]

    def retry_owed(self, *, at_start: bool = False) -> None:
        """Try once more every report still owed whose time has come.

        Runs on the scheduler's thread; never raises. A report owed for
        longer than :data:`GIVE_UP_AFTER` is dropped with an error in the log:
        the modality has to ask again.

        Parameters
        ----------
        at_start : bool
            Try every report owed, due or not: their first attempts ended
            with the process that made them.
        """
        try:
            now = datetime.now(UTC)
            with self._state() as conn:
                owed = commitments.due(conn, None if at_start else now)
        except Exception:
            logger.exception("Could not read the storage commitment reports owed")
            return
        for report in owed:
            if self._stopping.is_set():
                return
            try:
                self._retry(report, now)
            except Exception:
                logger.exception(
                    "Storage commitment %s: retry failed", report.transaction_uid
                )

    def stop(self) -> None:
        """Stop retrying and wait for reports being sent."""
        self._stopping.set()
        self._workers.shutdown(wait=True, cancel_futures=True)

    def _accept(self, event: Event) -> tuple[int, Dataset | None]:
        peer = describe_peer(event)
        if event.action_type != REQUEST_COMMITMENT:
            logger.warning("Storage commitment from %s: no such action", peer)
            return NO_SUCH_ACTION, None
        if (
            request_value(event, "RequestedSOPInstanceUID")
            != STORAGE_COMMITMENT_INSTANCE
        ):
            logger.warning("Storage commitment from %s: wrong SOP instance", peer)
            return NO_SUCH_INSTANCE, None
        try:
            request = _read_request(event)
        except ValueError as exc:
            logger.warning("Storage commitment from %s refused: %s", peer, exc)
            return INVALID_ARGUMENT, None

        self._keep(request)
        with self._lock:
            self._awaiting[
                (id(event.assoc), int(request_value(event, "MessageID") or -1))
            ] = request
        logger.info(
            "Storage commitment %s from %s: %d instance(s) asked",
            request.transaction_uid,
            peer,
            len(request.references),
        )
        return SUCCESS, None

    def _report(self, request: CommitRequest) -> None:
        uid = request.transaction_uid
        with self._lock:
            self._in_flight.add(uid)
        try:
            info, event_type = self._outcome(request)
            if self._deliver(request, info, event_type):
                self._forget(uid)
        except Exception:
            logger.exception("Storage commitment %s: report failed", uid)
        finally:
            with self._lock:
                self._in_flight.discard(uid)

    def _retry(self, report: OwedReport, now: datetime) -> None:
        uid = report.transaction_uid
        if now - report.asked_at > GIVE_UP_AFTER:
            logger.error(
                "Storage commitment %s: gave up reporting to %s after %d attempts "
                "since %s; it will have to ask again",
                uid,
                report.requestor_ae,
                report.attempts,
                report.asked_at.isoformat(timespec="seconds"),
            )
            self._forget(uid)
            return
        with self._lock:
            if uid in self._in_flight:
                return
            self._in_flight.add(uid)
        try:
            request = CommitRequest(
                uid,
                report.references,
                report.requestor_ae,
                report.requestor_address,
                None,
                report.asked_at,
            )
            info, event_type = self._outcome(request)
            if self._send_new(request, info, event_type):
                self._forget(uid)
            else:
                with self._state() as conn:
                    commitments.postpone(conn, uid, now + RETRY_EVERY)
        finally:
            with self._lock:
                self._in_flight.discard(uid)

    def _keep(self, request: CommitRequest) -> None:
        # The first retry is due after the first attempts have had their
        # time, so that retry_owed does not race them.
        if self._app_db is None:
            return
        report = OwedReport(
            request.transaction_uid,
            request.requestor_ae,
            request.requestor_address,
            request.references,
            request.asked_at,
            0,
        )
        try:
            with self._state() as conn:
                commitments.remember(conn, report, request.asked_at + RETRY_EVERY)
        except Exception:
            logger.exception(
                "Storage commitment %s: could not keep it in app.db; it is only "
                "tried for the next minute",
                request.transaction_uid,
            )

    def _forget(self, transaction_uid: str) -> None:
        if self._app_db is None:
            return
        with self._state() as conn:
            commitments.forget(conn, transaction_uid)

    def _state(self) -> closing[Any]:
        if self._app_db is None:
            raise RuntimeError("no app.db to keep storage commitment reports in")
        return closing(db.connect(self._app_db))

    def _outcome(self, request: CommitRequest) -> tuple[Dataset, int]:
        """Build the Event Information (PS3.4 Table J.3-2)."""
        uids = [uid for _, uid in request.references]
        try:
            with index_reader(self._index_path) as conn:
                stored = stored_instances(conn, uids)
            unreadable = False
        except Exception:
            logger.exception("Storage commitment: could not read the index")
            stored, unreadable = {}, True

        committed, failed = DicomSequence([]), DicomSequence([])
        for sop_class, uid in request.references:
            classes = stored.get(uid)
            if classes is not None and sop_class in classes:
                committed.append(_reference(sop_class, uid))
                continue
            reason = PROCESSING_FAILURE if unreadable else NO_SUCH_INSTANCE
            if classes is not None:
                reason = CLASS_INSTANCE_CONFLICT
            failed.append(_reference(sop_class, uid, reason))

        info = Dataset()
        info.TransactionUID = request.transaction_uid
        info.RetrieveAETitle = self._ae_title
        if committed:
            info.ReferencedSOPSequence = committed
        if failed:
            info.FailedSOPSequence = failed
        logger.info(
            "Storage commitment %s: %d committed, %d failed",
            request.transaction_uid,
            len(committed),
            len(failed),
        )
        return info, SOME_FAILED if failed else ALL_COMMITTED

    def _deliver(self, request: CommitRequest, info: Dataset, event_type: int) -> bool:
        """Report on the same association, else on new ones; True once done."""
        association = request.association
        if self._still_open(association) and _send_report(
            association, info, event_type
        ):
            logger.info(
                "Storage commitment %s reported to %s on the same association",
                request.transaction_uid,
                request.requestor_ae,
            )
            return True
        for delay in self._retry_delays:
            if self._stopping.wait(delay):
                break
            if self._send_new(request, info, event_type):
                return True
        if self._app_db is None:
            logger.error(
                "Storage commitment %s: could not report to %s; it will have to "
                "ask again",
                request.transaction_uid,
                request.requestor_ae,
            )
        else:
            logger.warning(
                "Storage commitment %s: could not report to %s yet; trying again "
                "every %d minutes for %d hours",
                request.transaction_uid,
                request.requestor_ae,
                RETRY_EVERY.total_seconds() // 60,
                GIVE_UP_AFTER.total_seconds() // 3600,
            )
        return False

    def _still_open(self, association: Any) -> bool:
        """Tell whether the requesting association is open and not releasing."""
        if self._stopping.wait(SETTLE_SECONDS) or not association.is_established:
            return False
        try:
            pending = association.dul.peek_next_pdu()
        except Exception:
            return False
        return not (isinstance(pending, A_RELEASE) and pending.result is None)

    def _send_new(self, request: CommitRequest, info: Dataset, event_type: int) -> bool:
        """Report on a new association; True when done (or hopeless)."""
        address = self._address_of(request)
        if address is None:
            logger.error(
                "Storage commitment %s: %s has no registered port to report to",
                request.transaction_uid,
                request.requestor_ae,
            )
            return True
        ae = AE(self._ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self._timeout
        ae.add_requested_context(
            STORAGE_COMMITMENT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
        role = build_role(STORAGE_COMMITMENT, scp_role=True)
        association = ae.associate(
            *address, ae_title=request.requestor_ae, ext_neg=[role]
        )
        if not association.is_established:
            logger.warning(
                "Storage commitment %s: %s at %s:%d did not accept an association",
                request.transaction_uid,
                request.requestor_ae,
                *address,
            )
            return False
        try:
            sent = _send_report(association, info, event_type)
        finally:
            association.release()
        if sent:
            logger.info(
                "Storage commitment %s reported to %s at %s:%d on a new association",
                request.transaction_uid,
                request.requestor_ae,
                *address,
            )
        return sent

    def _address_of(self, request: CommitRequest) -> tuple[str, int] | None:
        try:
            known = {m.ae_title: m for m in self._modalities()}
        except Exception:
            logger.exception("Could not read the registered modalities")
            return None
        modality = known.get(request.requestor_ae)
        if modality is None or not modality.port:
            return None
        return modality.host or request.requestor_address, int(modality.port)


def _read_request(event: Event) -> CommitRequest:
    """Read the Action Information (PS3.4 Table J.3-1).

    Raises
    ------
    ValueError
        If the Transaction UID or the references are missing.
    """
    info = event.action_information
    transaction = str(info.get("TransactionUID", "") or "")
    if not transaction:
        raise ValueError("no Transaction UID")
    references = [
        (
            str(item.get("ReferencedSOPClassUID", "")),
            str(item.get("ReferencedSOPInstanceUID", "")),
        )
        for item in info.get("ReferencedSOPSequence", None) or []
    ]
    if not references or not all(c and i for c, i in references):
        raise ValueError("no or incomplete Referenced SOP Sequence")
    requestor = event.assoc.requestor
    return CommitRequest(
        transaction, references, requestor.ae_title, str(requestor.address), event.assoc
    )


def _reference(sop_class: str, uid: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = uid
    if reason is not None:
        item.FailureReason = reason
    return item


def _send_report(association: Any, info: Dataset, event_type: int) -> bool:
    try:
        status, _ = association.send_n_event_report(
            info, event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
        )
    except Exception:
        logger.warning("Could not send a storage commitment report", exc_info=True)
        return False
    if not status or "Status" not in status:
        logger.warning("The storage commitment report got no answer")
        return False
    if int(status.Status) != SUCCESS:
        logger.warning(
            "The storage commitment report was answered 0x%04X", status.Status
        )
    return int(status.Status) == SUCCESS
