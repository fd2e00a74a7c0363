"""Outgoing data sets name the patient as the index does, not as stored.

Stored files are never rewritten. When a person corrected, merged or moved
a patient's records (or the worklist link filed a study under the scheduled
patient), C-FIND already answers from the index; C-MOVE and C-GET must send
the same patient, so each outgoing data set's Patient ID, Issuer of Patient
ID, Patient's Name, Birth Date and Sex are coerced to the index's values.
The values replaced travel in the Original Attributes Sequence
(PS3.3 C.12.1.1.9.2) with the reason ``COERCE``, as the standard asks of a
system that reconciles demographics.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from appliance.index.identity import normalise_name

logger = logging.getLogger(__name__)

MODIFYING_SYSTEM = "APPLIANCE"
PATIENT_KEYWORDS = (
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
)


def coerce_patient(dataset: Dataset, indexed: Mapping[str, Any]) -> list[str]:
    """Make `dataset` name the patient as `indexed` (a row of the index) does.

    Parameters
    ----------
    dataset : pydicom.dataset.Dataset
        Read from a stored file; changed in place.
    indexed : mapping
        The index's values by keyword (:data:`PATIENT_KEYWORDS`).

    Returns
    -------
    list of str
        The keywords changed; empty when the file already agreed.
    """
    original = Dataset()
    changed: list[str] = []
    for keyword in PATIENT_KEYWORDS:
        wanted = str(indexed.get(keyword) or "")
        current = _text(dataset, keyword)
        if _same(keyword, current, wanted) or not _encodable(dataset, wanted):
            continue
        if keyword in dataset:
            original[keyword] = copy.deepcopy(dataset[keyword])
        else:
            setattr(original, keyword, "")
        if keyword == "IssuerOfPatientID" and not wanted:
            del dataset[keyword]
        else:
            setattr(dataset, keyword, wanted)
        changed.append(keyword)
    if changed:
        _keep_original(dataset, original)
    return changed


def _same(keyword: str, current: str, wanted: str) -> bool:
    if keyword == "PatientName":
        return normalise_name(current) == normalise_name(wanted)
    return current == wanted


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    return "" if value is None else str(value).strip()


def _encodable(dataset: Dataset, text: str) -> bool:
    """Tell whether `text` fits the data set's character set (PS3.5 6.1).

    A data set without a Specific Character Set is plain ASCII; it is told
    to be UTF-8 (ISO_IR 192), of which ASCII is a part, when a corrected
    value needs more. One with another single character set keeps it, and a
    value it cannot hold is left as stored (with a log line).
    """
    if text.isascii():
        return True
    charset = dataset.get("SpecificCharacterSet")
    if not charset:
        dataset.SpecificCharacterSet = "ISO_IR 192"
        return True
    try:
        encodings = convert_encodings(charset)
        if len(encodings) != 1:
            raise ValueError("code extensions")
        text.encode(encodings[0])
    except (LookupError, UnicodeEncodeError, ValueError):
        logger.warning(
            "A corrected value does not fit the character set of %s; sent as stored",
            dataset.get("SOPInstanceUID", "?"),
        )
        return False
    return True


def _keep_original(dataset: Dataset, original: Dataset) -> None:
    item = Dataset()
    item.ModifiedAttributesSequence = Sequence([original])
    item.AttributeModificationDateTime = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
    item.ModifyingSystem = MODIFYING_SYSTEM
    item.SourceOfPreviousValues = ""
    item.ReasonForTheAttributeModification = "COERCE"
    history = list(dataset.get("OriginalAttributesSequence", []))
    dataset.OriginalAttributesSequence = Sequence([*history, item])
