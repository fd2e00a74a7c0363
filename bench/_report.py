"""The ingest benchmark's markdown report and its two pass/fail checks."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from _dataset import MB

MAX_RATIO = 1.5
MAX_PEAK_RSS = 250 * MB


class Measured(Protocol):
    """What the report reads of a receiver."""

    name: str
    label: str
    note: str
    seconds: list[float]
    peak_rss_bytes: int | None


@dataclass(frozen=True)
class Report:
    """What was sent: the ingest set, the memory test's clip, the rounds."""

    instances: int
    set_bytes: int
    clip_bytes: int
    rounds: int


def format_report(report: Report, receivers: Sequence[Measured]) -> tuple[str, bool]:
    """Return the markdown report and whether both checks passed.

    Parameters
    ----------
    report : Report
        What was sent.
    receivers : sequence of Measured
        The baseline, the appliance and Orthanc, in that order of rows.

    Returns
    -------
    str
        A heading, a summary line, the table and one line per check.
    bool
        True if the appliance passed both checks.
    """
    by_name = {receiver.name: receiver for receiver in receivers}
    baseline = _median(by_name["baseline"])
    checks = _checks(by_name["appliance"], baseline)

    lines = ["## Ingest benchmark", "", _summary(report), ""]
    lines += _table(report, receivers, baseline)
    lines += [""] + [f"- {'PASS' if ok else 'FAIL'}: {text}" for ok, text in checks]
    return "\n".join(lines), all(ok for ok, _ in checks)


def _summary(report: Report) -> str:
    """Return the sentence that says what was measured and how."""
    return (
        f"{report.instances} ultrasound instances, {report.set_bytes / MB:.1f} MB, "
        f"sent by DCMTK `storescu -xy +sd +r` over loopback; median of "
        f"{report.rounds} rounds taken in turn. Peak RSS: one "
        f"{report.clip_bytes / MB:.0f} MB JPEG Baseline clip sent to a freshly "
        f"started receiver (process tree; 1 MB = 10^6 bytes)."
    )


def _table(
    report: Report, receivers: Sequence[Measured], baseline: float | None
) -> list[str]:
    """Return the table's lines, one row per receiver."""
    lines = [
        "| receiver | median s | rounds s | MB/s | vs baseline | peak RSS MB |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for receiver in receivers:
        lines.append(_row(report, receiver, baseline))
    return lines


def _row(report: Report, receiver: Measured, baseline: float | None) -> str:
    """Return one table row; a receiver without times shows its note."""
    median = _median(receiver)
    rss = _mb(receiver.peak_rss_bytes)
    if median is None:
        return f"| {receiver.label} | {receiver.note or 'no result'} | | | | {rss} |"

    rounds = " ".join(f"{seconds:.2f}" for seconds in receiver.seconds)
    speed = report.set_bytes / MB / median
    ratio = f"{median / baseline:.2f}x" if baseline else "-"
    return (
        f"| {receiver.label} | {median:.2f} | {rounds} | {speed:.1f} | {ratio} "
        f"| {rss} |"
    )


def _checks(appliance: Measured, baseline: float | None) -> list[tuple[bool, str]]:
    """Return the requirement's two checks as (passed, sentence) pairs."""
    median = _median(appliance)
    if median is None or baseline is None:
        speed = (False, f"appliance ingest time not measured ({appliance.note})")
    else:
        ratio = median / baseline
        speed = (
            ratio <= MAX_RATIO,
            f"appliance ingest takes {ratio:.2f}x the baseline "
            f"(limit {MAX_RATIO:.2f}x)",
        )

    peak = appliance.peak_rss_bytes
    if peak is None:
        memory = (False, f"appliance peak RSS not measured ({appliance.note})")
    else:
        memory = (
            peak < MAX_PEAK_RSS,
            f"appliance peak RSS {_mb(peak)} MB receiving the clip "
            f"(limit {MAX_PEAK_RSS // MB} MB)",
        )
    return [speed, memory]


def _median(receiver: Measured) -> float | None:
    """Return the median of the receiver's times, None if it has none."""
    return statistics.median(receiver.seconds) if receiver.seconds else None


def _mb(size: int | None) -> str:
    """Return `size` in whole MB, or '-' if it was not measured."""
    return "-" if size is None else f"{size / MB:.0f}"
