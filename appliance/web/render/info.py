"""What the viewer needs to know of an instance before showing it.

Read from the stored file's header (never its pixel data): what kind of
thing it is, its cine rate and its grayscale window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom import Dataset

from appliance.web.render.pixels import MONOCHROME, Window, first_window

SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
DEFAULT_CINE_RATE = 25.0


@dataclass(frozen=True)
class InstanceInfo:
    """How to show one instance."""

    kind: str
    """``image``, ``clip``, ``report`` (structured report) or ``other``."""

    frames: int
    rows: int
    columns: int
    grayscale: bool
    frame_rate: float | None
    window: Window | None


def read_info(path: Path, sop_class_uid: str, number_of_frames: int) -> InstanceInfo:
    """Describe a stored instance from its header.

    Raises
    ------
    pydicom.errors.InvalidDicomError, OSError
        If the file cannot be read.
    """
    header = pydicom.dcmread(path, stop_before_pixels=True)
    rows = int(header.get("Rows") or 0)
    columns = int(header.get("Columns") or 0)
    photometric = str(header.get("PhotometricInterpretation", "")).strip()
    return InstanceInfo(
        kind=instance_kind(sop_class_uid, header, number_of_frames),
        frames=number_of_frames,
        rows=rows,
        columns=columns,
        grayscale=photometric in MONOCHROME,
        frame_rate=cine_rate(header) if number_of_frames > 1 else None,
        window=first_window(header) if photometric in MONOCHROME else None,
    )


def instance_kind(sop_class_uid: str, header: Dataset, number_of_frames: int) -> str:
    """Classify an instance: a private SR class counts as a report too."""
    if sop_class_uid.startswith(SR_CLASS_PREFIX) or "ContentSequence" in header:
        return "report"
    if header.get("Rows") and header.get("Columns"):
        return "clip" if number_of_frames > 1 else "image"
    return "other"


def cine_rate(header: Dataset) -> float:
    """Return the frames per second a clip is meant to play at.

    In order of preference: Recommended Display Frame Rate (0008,2144), Cine
    Rate (0018,0040), then Frame Time (0018,1063) or the mean of Frame Time
    Vector (0018,1065), PS3.3 C.7.6.5. Without any, 25 frames a second.
    """
    for keyword in ("RecommendedDisplayFrameRate", "CineRate"):
        rate = _positive(header.get(keyword))
        if rate is not None:
            return rate
    frame_time = _positive(header.get("FrameTime"))
    if frame_time is not None:
        return 1000.0 / frame_time
    vector = header.get("FrameTimeVector")
    if vector:
        # The first entry is 0 (PS3.3 C.7.6.5.1.2): average the rest.
        steps = [float(step) for step in list(vector)[1:] if float(step) > 0]
        if steps:
            return 1000.0 * len(steps) / sum(steps)
    return DEFAULT_CINE_RATE


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
