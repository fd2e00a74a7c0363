"""Attribute matching for C-FIND, as PS3.4 C.2.2.2 defines it.

:func:`match` takes a request's Identifier and one candidate entity (a data
set holding everything known about it) and returns the response Identifier
(the requested keys, valued from the candidate) or None when the candidate
does not match. The kinds of matching:

- universal (C.2.2.2.3): an empty value, or ``*`` alone, matches anything;
- single value (C.2.2.2.1): equal values; person names (VR PN) compare
  without regard to case, spacing or empty trailing components;
- wildcard (C.2.2.2.4): ``*`` and ``?`` in text VRs (not dates, times, UIDs);
- range (C.2.2.2.5): ``A-B``, ``A-`` and ``-B`` for DA, TM and DT;
- list of UIDs (C.2.2.2.2): a multi-valued UI key matches any of its values;
- sequence (C.2.2.2.6): the keys of the key's one item are matched against
  each item of the candidate's sequence; the matching items are returned.

A multi-valued candidate (ModalitiesInStudy) matches when any value does.
The SQL behind Q/R narrows candidates first; this is the exact check.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from appliance.index.identity import normalise_name
from appliance.index.query import (
    has_wildcard,
    is_range,
    normalise_time,
    range_bounds,
)

# Keys that steer the query rather than match (PS3.4 C.4.1.1.3, K.6.1.1.3).
NOT_MATCHED = frozenset(
    {
        "QueryRetrieveLevel",
        "SpecificCharacterSet",
        "RetrieveAETitle",
        "InstanceAvailability",
        "TimezoneOffsetFromUTC",
        "QueryRetrieveView",
    }
)


def match(identifier: Dataset, candidate: Dataset) -> Dataset | None:
    """Match one candidate; return the response Identifier or None.

    Parameters
    ----------
    identifier : pydicom.dataset.Dataset
        The request's Identifier (or one sequence item of it).
    candidate : pydicom.dataset.Dataset
        Everything known about the entity.

    Returns
    -------
    pydicom.dataset.Dataset or None
        The requested keys, valued from `candidate` (empty where it has no
        value); None when any key does not match.
    """
    response = Dataset()
    for key in _keys(identifier):
        have = candidate.get(key.tag)
        if key.VR == "SQ":
            result = _match_sequence(key, have)
            if result is None:
                return None
            response.add(result)
            continue
        if not matches_value(key.VR, values_of(key), values_of(have)):
            return None
        response.add(_copy(key, have))
    return response


def is_universal(element: DataElement | None) -> bool:
    """Tell whether a key asks for no matching (PS3.4 C.2.2.2.3)."""
    if element is None:
        return True
    if element.VR == "SQ":
        return all(
            all(is_universal(item_key) for item_key in _keys(item))
            for item in element.value or []
        )
    return _universal(values_of(element))


def values_of(element: DataElement | None) -> list[str]:
    """Return an element's values as text; an empty element has none."""
    if element is None or element.value is None:
        return []
    raw: Any = element.value
    if isinstance(raw, list | tuple | MultiValue):
        texts = [str(value).strip() for value in raw]
    else:
        texts = [str(raw).strip()]
    return [text.replace("\x00", "") for text in texts if text]


def matches_value(vr: str, wanted: list[str], have: list[str]) -> bool:
    """Match one key's values against a candidate's values."""
    if _universal(wanted):
        return True
    if not have:
        return False
    return any(_matches_one(vr, w, h) for w in wanted for h in have)


def _matches_one(vr: str, wanted: str, have: str) -> bool:
    if is_range(vr, wanted):
        return _in_range(vr, wanted, have)
    if vr == "PN":
        return _wildcard_match(normalise_name(wanted), normalise_name(have))
    if has_wildcard(vr, wanted):
        return _wildcard_match(wanted, have)
    if vr == "TM":
        return normalise_time(wanted) == normalise_time(have)
    return wanted == have


def _in_range(vr: str, wanted: str, have: str) -> bool:
    low, high = range_bounds(vr, wanted)
    value = normalise_time(have) if vr == "TM" else have
    return (not low or value >= low) and (not high or value <= high)


def _wildcard_match(pattern: str, value: str) -> bool:
    regex = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char)
        for char in pattern
    )
    return re.fullmatch(regex, value, re.DOTALL) is not None


def _universal(values: list[str]) -> bool:
    return not values or all(set(value) <= {"*"} for value in values)


def _match_sequence(key: DataElement, have: DataElement | None) -> DataElement | None:
    """Sequence matching (PS3.4 C.2.2.2.6): return the element to answer."""
    items = list(key.value or [])
    query_item = items[0] if items else Dataset()
    candidates = list(have.value or []) if have is not None and have.VR == "SQ" else []

    # An empty key (no item, or an item with no keys) returns every item whole.
    if not list(_keys(query_item)):
        return DataElement(key.tag, "SQ", Sequence([_clone(i) for i in candidates]))

    answered = [r for r in (match(query_item, item) for item in candidates) if r]
    if answered:
        return DataElement(key.tag, "SQ", Sequence(answered))
    if is_universal(key):
        return DataElement(key.tag, "SQ", Sequence([]))
    return None


def _keys(identifier: Dataset) -> Iterator[DataElement]:
    for element in identifier:
        if element.tag.group in (0x0000, 0x0002) or element.tag.element == 0:
            continue
        if element.keyword in NOT_MATCHED:
            continue
        yield element


def _copy(key: DataElement, have: DataElement | None) -> DataElement:
    if have is None or have.VR == "SQ":
        return DataElement(key.tag, key.VR, None)
    return DataElement(key.tag, have.VR, have.value)


def _clone(item: Dataset) -> Dataset:
    clone = Dataset()
    for element in item:
        clone.add(element)
    return clone
