"""Small pieces every service handler shares: naming the peer, finishing a
C-FIND response, DIMSE status data sets.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pynetdicom.events import Event

# PS3.5 Table 6.2-1 and C.12.1.1.2: UTF-8, for names beyond ASCII.
UTF8 = "ISO_IR 192"


def describe_peer(event: Event) -> str:
    """Name the calling AE and its address for a log line (no patient data)."""
    try:
        requestor = event.assoc.requestor
        return f"{requestor.ae_title} at {requestor.address}:{requestor.port}"
    except Exception:
        return "an unknown peer"


def request_value(event: Event, keyword: str) -> str:
    """Return one parameter of the DIMSE request as text ("" when absent)."""
    value = getattr(event.request, keyword, None)
    return "" if value is None else str(value)


def finish_response(response: Dataset, identifier: Dataset) -> Dataset:
    """Add the character set a C-FIND response needs (PS3.4 C.4.1.1.3.2).

    Index and worklist text is Unicode; a response that holds anything
    beyond ASCII says it is UTF-8, otherwise it repeats what was asked.
    """
    if _needs_unicode(response):
        response.SpecificCharacterSet = UTF8
    elif "SpecificCharacterSet" in identifier:
        response.SpecificCharacterSet = identifier.SpecificCharacterSet
    return response


def status(code: int, comment: str = "", error_id: int | None = None) -> Dataset:
    """Return a status data set with an Error Comment (PS3.7 C.4)."""
    dataset = Dataset()
    dataset.Status = code
    if comment:
        dataset.ErrorComment = comment[:64]
    if error_id is not None:
        dataset.ErrorID = error_id
    return dataset


def _needs_unicode(dataset: Dataset) -> bool:
    for element in dataset.iterall():
        if (
            element.VR in ("PN", "LO", "SH", "ST", "LT", "UT", "UC")
            and not str(element.value or "").isascii()
        ):
            return True
    return False
