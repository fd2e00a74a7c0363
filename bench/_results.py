"""What ``run_all.py`` reads back from each benchmark: one row per measure.

The search and viewer benchmarks write their numbers as JSON. The ingest,
rebuild and backup benchmarks print a markdown report only; their tables are
read here by column and row name, so a changed label shows up as a missing
number (and a note), never as a wrong one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    """One measure of one benchmark, for the appliance and what it is against."""

    benchmark: str
    measure: str
    unit: str
    appliance: float | None
    baseline: float | None = None
    baseline_is: str = ""
    orthanc: float | None = None
    higher_is_better: bool = False

    def advantage(self, other: float | None) -> float | None:
        """How many times better the appliance did than `other` (>1: better)."""
        if other is None or self.appliance is None or not other or not self.appliance:
            return None
        if self.higher_is_better:
            return self.appliance / other
        return other / self.appliance


Table = list[dict[str, str]]
_CHECK = re.compile(r"^- (PASS|FAIL): (.*)$", re.MULTILINE)


def tables(markdown: str) -> list[Table]:
    """Return every pipe table in `markdown` as rows keyed by column heading."""
    found: list[Table] = []
    block: list[list[str]] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if len(block) >= 2:
            header, body = block[0], block[2:]
            found.append([dict(zip(header, row, strict=False)) for row in body])
        block = []
    return found


def checks(markdown: str) -> list[tuple[bool, str]]:
    """Return the report's ``- PASS: ...`` and ``- FAIL: ...`` lines."""
    return [(verdict == "PASS", text) for verdict, text in _CHECK.findall(markdown)]


def cell(table: Table, row_start: str, column: str, label: str = "") -> float | None:
    """Return the number in `column` of the first row whose first cell starts so."""
    for row in table:
        first = next(iter(row.values()), "")
        if first.startswith(row_start):
            match = re.match(r"[-+]?[\d,]*\.?\d+", row.get(column, "").strip())
            return float(match.group().replace(",", "")) if match else None
    return None


def ingest_metrics(markdown: str, _data: Any) -> list[Metric]:
    """The ingest benchmark's time for the set, and peak memory for the clip."""
    table = next(iter(tables(markdown)), [])
    return [
        Metric(
            "ingest",
            "storescu sends 200 instances, 220 MB",
            "s",
            cell(table, "appliance", "median s"),
            cell(table, "baseline", "median s"),
            "bare pynetdicom receiver",
            cell(table, "Orthanc", "median s"),
        ),
        Metric(
            "ingest",
            "peak memory receiving a 500 MB clip",
            "MB",
            cell(table, "appliance", "peak RSS MB"),
            cell(table, "baseline", "peak RSS MB"),
            "bare pynetdicom receiver",
            cell(table, "Orthanc", "peak RSS MB"),
        ),
    ]


def rebuild_metrics(markdown: str, _data: Any) -> list[Metric]:
    """The index rebuild against a bare header scan and Orthanc's re-import."""
    table = next(iter(tables(markdown)), [])
    return [
        Metric(
            "rebuild",
            "index rebuilt from the stored files",
            "s",
            cell(table, "appliance rebuild", "median s"),
            cell(table, "bare pydicom header scan", "median s"),
            "bare pydicom header scan",
            cell(table, "Orthanc re-import", "median s"),
        )
    ]


def backup_metrics(markdown: str, _data: Any) -> list[Metric]:
    """The incremental backup against cp, and C-STORE during a backup."""
    table = next(iter(tables(markdown)), [])
    during = cell(table, "C-STORE, backup running", "seconds")
    idle = cell(table, "C-STORE, no backup", "seconds")
    return [
        Metric(
            "backup",
            "incremental backup of one new day",
            "s",
            cell(table, "incremental backup", "seconds"),
            cell(table, "cp -r, then sync", "seconds"),
            "cp -r and sync of the new files",
        ),
        Metric(
            "backup",
            "median C-STORE while a backup runs",
            "ms",
            None if during is None else during * 1000,
            None if idle is None else idle * 1000,
            "the same C-STORE without a backup",
        ),
    ]


def search_metrics(_markdown: str, data: Any) -> list[Metric]:
    """A name search: the appliance's web and query against Orthanc's find."""
    rows = (data or {}).get("rows", {})
    web = rows.get("appliance web", {})
    query = rows.get("appliance query", {})
    orthanc = rows.get("Orthanc /tools/find", {})
    # No bare baseline here: the issue compares with Orthanc's find only
    return [
        Metric(
            "search",
            f"name search over HTTP, median ({_size(data)})",
            "ms",
            web.get("median_ms"),
            orthanc=orthanc.get("median_ms"),
        ),
        Metric(
            "search",
            "name search over HTTP, 95th percentile",
            "ms",
            web.get("p95_ms"),
            orthanc=orthanc.get("p95_ms"),
        ),
        Metric(
            "search",
            "name search, the query function alone (median / p95 in the report)",
            "ms",
            query.get("median_ms"),
        ),
    ]


def viewer_metrics(_markdown: str, data: Any) -> list[Metric]:
    """The clip's first frame on screen, and the frames shown per second."""
    rows = (data or {}).get("rows", {})
    appliance = rows.get("appliance", {})
    orthanc = rows.get("Orthanc web viewer", {})
    return [
        Metric(
            "viewer",
            "first frame of the 120-frame clip on screen",
            "ms",
            appliance.get("first_ms"),
            orthanc=orthanc.get("first_ms"),
        ),
        Metric(
            "viewer",
            "frames shown per second (Orthanc: wheel steps, it has no cine)",
            "fps",
            appliance.get("shown_fps"),
            (data or {}).get("native_fps"),
            "the clip's native rate",
            orthanc.get("stepped_fps"),
            higher_is_better=True,
        ),
    ]


def _size(data: Any) -> str:
    plan = (data or {}).get("plan", {})
    if not plan:
        return "size unknown"
    return f"{plan['studies']:,} studies, {plan['instances']:,} instances"


PARSERS: dict[str, Callable[[str, Any], list[Metric]]] = {
    "ingest": ingest_metrics,
    "rebuild": rebuild_metrics,
    "search": search_metrics,
    "viewer": viewer_metrics,
    "backup": backup_metrics,
}
