"""Index records made from real files, for tests that need no network."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid

from appliance.index import InstanceRecord, read_header, record_from_header


def record_of(path: Path, **changes: Any) -> InstanceRecord:
    """The index record of a real file, with fresh UIDs and some changes."""
    header = read_header(path)
    record = record_from_header(
        header,
        file_path=f"2026/12/03/TEST/{generate_uid()}.dcm",
        file_size=path.stat().st_size,
        sha256=generate_uid().replace(".", "")[:64].ljust(64, "0"),
        received_at=datetime(2026, 12, 3, 9, 30),
        source_ae="TEST",
    )
    fresh = {
        "study_instance_uid": generate_uid(),
        "series_instance_uid": generate_uid(),
        "sop_instance_uid": generate_uid(),
    }
    return dataclasses.replace(record, **{**fresh, **changes})
