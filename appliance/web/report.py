"""Structured reports (measurements) as indented lines of readable text.

Walks the SR content tree (PS3.3 C.17.3): each content item becomes one line,
"concept: value", indented by its depth. Numeric values carry their units
(PS3.3 C.18.1), codes their meaning, containers become headings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset

MAX_DEPTH = 32


@dataclass(frozen=True)
class ReportLine:
    """One line of a report: its nesting depth and text."""

    depth: int
    text: str
    heading: bool = False


def report_lines(ds: Dataset) -> list[ReportLine]:
    """Return the report's title and content as lines of text."""
    lines = [ReportLine(0, _concept(ds) or "Report", heading=True)]
    for label, keyword in (
        ("Completion", "CompletionFlag"),
        ("Verification", "VerificationFlag"),
    ):
        if ds.get(keyword):
            lines.append(ReportLine(1, f"{label}: {ds.get(keyword)}"))
    lines.extend(_walk(ds.get("ContentSequence") or [], 1))
    return lines


def _walk(items: Any, depth: int) -> Iterator[ReportLine]:
    if depth > MAX_DEPTH:
        return
    for item in items:
        value_type = str(item.get("ValueType", ""))
        concept = _concept(item)
        if value_type == "CONTAINER":
            yield ReportLine(depth, concept or "Section", heading=True)
        else:
            value = _value(item, value_type)
            yield ReportLine(depth, f"{concept}: {value}" if concept else value)
        yield from _walk(item.get("ContentSequence") or [], depth + 1)


def _value(item: Dataset, value_type: str) -> str:
    if value_type == "TEXT":
        return str(item.get("TextValue", ""))
    if value_type == "NUM":
        return _numeric(item)
    if value_type == "CODE":
        return _code_meaning(item.get("ConceptCodeSequence"))
    if value_type in ("DATE", "TIME", "DATETIME"):
        keyword = {"DATE": "Date", "TIME": "Time", "DATETIME": "DateTime"}[value_type]
        return str(item.get(keyword, ""))
    if value_type == "PNAME":
        return str(item.get("PersonName", ""))
    if value_type == "UIDREF":
        return str(item.get("UID", ""))
    if value_type in ("IMAGE", "COMPOSITE", "WAVEFORM"):
        return f"({value_type.lower()} reference)"
    if value_type in ("SCOORD", "SCOORD3D", "TCOORD"):
        return "(coordinates)"
    return str(item.get("TextValue", "")) or f"({value_type.lower() or 'item'})"


def _numeric(item: Dataset) -> str:
    measured = item.get("MeasuredValueSequence")
    if not measured:
        return "(no value)"
    value = measured[0]
    number = str(value.get("NumericValue", "")).strip()
    units = value.get("MeasurementUnitsCodeSequence")
    unit = str(units[0].get("CodeValue", "")) if units else ""
    if unit in ("1", "{ratio}", "no units"):
        unit = ""
    return f"{number} {unit}".strip()


def _concept(item: Dataset) -> str:
    return _code_meaning(item.get("ConceptNameCodeSequence"))


def _code_meaning(sequence: Any) -> str:
    if not sequence:
        return ""
    code = sequence[0]
    return str(code.get("CodeMeaning", "") or code.get("CodeValue", ""))
