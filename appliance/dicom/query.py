"""Query/Retrieve C-FIND SCP: Patient Root and Study Root (PS3.4 C.4.1).

The index answers: :func:`appliance.index.query.find` narrows the rows in
SQL, each row becomes a data set, and :func:`appliance.dicom.matching.match`
checks it exactly and builds the response. Keys the index does not keep
(Study ID, Body Part Examined, ...) are read from the header of one stored
instance under each row, only when a request asks for them.

Hierarchical (baseline) queries per PS3.4 C.4.1.3.1; keys of the levels
above the query level are matched too, as a relational SCP would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from appliance.dicom import matching
from appliance.dicom.responses import (
    describe_peer,
    finish_response,
    request_value,
)
from appliance.index import index_reader, read_header
from appliance.index import query as index_query
from appliance.storage import Storage

logger = logging.getLogger(__name__)

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"

# PS3.4 C.6.1 and C.6.2: the levels of each information model.
_LEVELS = {
    "patient": index_query.LEVELS,
    "study": index_query.LEVELS[1:],
}
_ROOT_OF = {
    PATIENT_ROOT_FIND: "patient",
    PATIENT_ROOT_MOVE: "patient",
    PATIENT_ROOT_GET: "patient",
    STUDY_ROOT_FIND: "study",
    STUDY_ROOT_MOVE: "study",
    STUDY_ROOT_GET: "study",
}

PENDING = 0xFF00
CANCELLED = 0xFE00
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_MISMATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000

# What a row of the index provides, beyond the searchable columns.
_ROW_KEYWORDS = set(index_query.COLUMNS) | {
    "NumberOfFrames",
    "Rows",
    "Columns",
    "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances",
}

FindResult = tuple[int, Dataset | None]


class InvalidQueryError(ValueError):
    """The Identifier does not fit the information model (0xA900)."""


class QueryFind:
    """Handle Q/R C-FIND for the listener.

    Parameters
    ----------
    index_path : pathlib.Path
        The ``index.db`` to read.
    storage : Storage
        To read headers for keys the index does not keep.
    ae_title : str
        Returned as Retrieve AE Title: where to C-MOVE or C-GET from.
    """

    def __init__(self, index_path: Path, storage: Storage, ae_title: str) -> None:
        self._index_path = index_path
        self._storage = storage
        self._ae_title = ae_title

    def __call__(self, event: Event) -> Iterator[FindResult]:
        """Yield a Pending response per match; never raises."""
        started = time.monotonic()
        try:
            identifier = event.identifier
            model = request_value(event, "AffectedSOPClassUID")
            search = build_search(identifier, model)
        except InvalidQueryError as exc:
            logger.warning("Refused query from %s: %s", describe_peer(event), exc)
            yield IDENTIFIER_MISMATCH, None
            return
        except Exception:
            logger.exception("Unreadable query from %s", describe_peer(event))
            yield UNABLE_TO_PROCESS, None
            return

        try:
            with index_reader(self._index_path) as conn:
                rows = index_query.find(conn, search)
        except Exception:
            logger.exception("Index query for %s failed", describe_peer(event))
            yield OUT_OF_RESOURCES, None
            return

        sent = yield from self._answer(event, identifier, search, rows)
        logger.info(
            "C-FIND %s from %s: %d of %d candidates matched, %.0f ms",
            search.level,
            describe_peer(event),
            sent,
            len(rows),
            (time.monotonic() - started) * 1000,
        )

    def _answer(
        self,
        event: Event,
        identifier: Dataset,
        search: index_query.Search,
        rows: list[dict[str, Any]],
    ) -> Generator[FindResult, None, int]:
        sent = 0
        for row in rows:
            if event.is_cancelled:
                logger.info("C-FIND from %s cancelled", describe_peer(event))
                yield CANCELLED, None
                return sent
            try:
                candidate = row_dataset(row)
                if search.sample_file:
                    self._add_from_file(candidate, identifier, row)
                response = matching.match(identifier, candidate)
            except Exception:
                logger.exception(
                    "Could not answer a C-FIND from %s", describe_peer(event)
                )
                yield UNABLE_TO_PROCESS, None
                return sent
            if response is None:
                continue
            response.QueryRetrieveLevel = search.level
            response.RetrieveAETitle = self._ae_title
            sent += 1
            yield PENDING, finish_response(response, identifier)
        return sent

    def _add_from_file(
        self, candidate: Dataset, identifier: Dataset, row: dict[str, Any]
    ) -> None:
        """Fill requested keys the index lacks from one stored header."""
        if not row.get("sample_file"):
            return
        try:
            header = read_header(self._storage.absolute(row["sample_file"]))
        except Exception:
            logger.warning("Could not read %s for a C-FIND", row["sample_file"])
            return
        for key in identifier:
            if key.tag not in candidate and key.tag in header:
                candidate[key.tag] = header[key.tag]


def levels_of(model: str) -> tuple[str, ...]:
    """Return the query levels of an information model's SOP Class UID."""
    return _LEVELS[_ROOT_OF[model]]


def build_search(identifier: Dataset, model: str) -> index_query.Search:
    """Read an Identifier into an index search.

    Raises
    ------
    InvalidQueryError
        If the model is unknown or the level is not one of its levels.
    """
    if model not in _ROOT_OF:
        raise InvalidQueryError(f"unknown information model {model}")
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in levels_of(model):
        raise InvalidQueryError(f"level {level!r} is not one of {levels_of(model)}")

    keys: list[index_query.Key] = []
    extra = False
    for element in identifier:
        keyword = element.keyword
        if keyword in matching.NOT_MATCHED or element.tag.group in (0x0000, 0x0002):
            continue
        if keyword not in _ROW_KEYWORDS:
            extra = True
        if keyword in index_query.COLUMNS and not matching.is_universal(element):
            values = tuple(matching.values_of(element))
            keys.append(index_query.Key(keyword, element.VR, values))
    counts = any(e.keyword.startswith("NumberOf") for e in identifier)
    return index_query.Search(level, tuple(keys), counts=counts, sample_file=extra)


def row_dataset(row: dict[str, Any]) -> Dataset:
    """Turn one row of :func:`appliance.index.query.find` into a data set."""
    dataset = Dataset()
    for keyword, value in row.items():
        if not keyword[:1].isupper():
            continue
        if keyword == "ModalitiesInStudy":
            value = [m for m in str(value or "").split("\\") if m]
        setattr(dataset, keyword, "" if value is None else value)
    return dataset
