"""The index: a derived, rebuildable SQLite cache of what storage holds.

All SQL for ``index.db`` stays inside this package, so the web and the
listener only ever call the functions exported here.
"""

from appliance.index.ingest import AddResult, Outcome
from appliance.index.records import (
    InstanceRecord,
    UnreadableInstanceError,
    describe_header,
    locate,
    read_header,
    read_header_prefix,
    record_from_header,
)
from appliance.index.schema import open_index, open_index_reader
from appliance.index.writer import IndexWriter, WriterStoppedError

__all__ = [
    "AddResult",
    "IndexWriter",
    "InstanceRecord",
    "Outcome",
    "UnreadableInstanceError",
    "WriterStoppedError",
    "describe_header",
    "locate",
    "open_index",
    "open_index_reader",
    "read_header",
    "read_header_prefix",
    "record_from_header",
]
