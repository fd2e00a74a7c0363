"""The index: a derived, rebuildable SQLite cache of what storage holds.

All SQL for ``index.db`` stays inside this package, so the web and the
listener only ever call the functions exported here.

Readers open a connection per piece of work with :func:`index_reader` and
close it: a rebuild may swap ``index.db`` for a new file between two reads
(see :mod:`appliance.index.readers`).
"""

from appliance.index.header_scan import scan_header
from appliance.index.ingest import AddResult, Outcome
from appliance.index.readers import index_reader
from appliance.index.records import (
    Header,
    InstanceRecord,
    UnreadableInstanceError,
    describe_header,
    header_number,
    header_text,
    locate,
    parse_header,
    parse_header_prefix,
    read_header,
    read_header_prefix,
    record_from_header,
)
from appliance.index.schema import open_index, open_index_reader
from appliance.index.status import RebuildState, RebuildStatus
from appliance.index.writer import IndexWriter, WriterStoppedError

__all__ = [
    "AddResult",
    "Header",
    "IndexWriter",
    "InstanceRecord",
    "Outcome",
    "RebuildState",
    "RebuildStatus",
    "UnreadableInstanceError",
    "WriterStoppedError",
    "describe_header",
    "header_number",
    "header_text",
    "index_reader",
    "locate",
    "open_index",
    "open_index_reader",
    "parse_header",
    "parse_header_prefix",
    "read_header",
    "read_header_prefix",
    "record_from_header",
    "scan_header",
]
