"""The benchmarks' chart: how many times better the appliance did, per measure.

One row per measure, two bars growing from 1: against the bare baseline and
against Orthanc, on a logarithmic scale (to the right: the appliance did
better; to the left: worse). Times count as better when lower, rates when
higher. Drawn with matplotlib (the ``test`` extra), without a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from _results import Metric

BASELINE_COLOUR = "#4c72b0"
ORTHANC_COLOUR = "#dd8452"
TICKS = (0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


def draw(metrics: Sequence[Metric], path: Path, title: str) -> str | None:
    """Write the chart to `path`; return None, or why nothing was drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: matplotlib is missing (pip install -e '.[test]')"

    rows = [m for m in metrics if m.advantage(m.baseline) or m.advantage(m.orthanc)]
    if not rows:
        return "no chart: no measure has a number to compare"

    figure, axes = plt.subplots(figsize=(11, 1.0 + 0.62 * len(rows)), dpi=110)
    positions = range(len(rows))
    for offset, colour, label, pick in (
        (-0.2, BASELINE_COLOUR, "against the bare baseline", lambda m: m.baseline),
        (0.2, ORTHANC_COLOUR, "against Orthanc 1.10", lambda m: m.orthanc),
    ):
        values = [m.advantage(pick(m)) for m in rows]
        bars = axes.barh(
            [p + offset for p in positions],
            [v - 1 if v else 0 for v in values],
            height=0.38,
            left=1,
            color=colour,
            label=label,
        )
        for bar, value in zip(bars, values, strict=True):
            if value:
                # The label goes beyond the bar's far end, whichever side
                axes.annotate(
                    f"{value:.2f}x",
                    (value, bar.get_y() + bar.get_height() / 2),
                    xytext=(4 if value >= 1 else -4, 0),
                    textcoords="offset points",
                    ha="left" if value >= 1 else "right",
                    va="center",
                    fontsize=8,
                )

    axes.set_xscale("log")
    axes.axvline(1.0, color="black", linewidth=1)
    axes.set_yticks(list(positions))
    axes.set_yticklabels([f"{m.benchmark}: {m.measure}" for m in rows], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("times better (>1: the appliance did better; log scale)")
    axes.set_title(title, fontsize=10)
    axes.legend(loc="lower right", fontsize=8)
    _widen(axes, rows)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return None


def _widen(axes: object, rows: Sequence[Metric]) -> None:
    """Leave room for the labels at both ends of the scale."""
    values = [
        value
        for m in rows
        for value in (m.advantage(m.baseline), m.advantage(m.orthanc))
        if value
    ]
    low = min([*values, 1.0]) / 2.2
    high = max([*values, 1.0]) * 1.8
    axes.set_xlim(low, high)  # type: ignore[attr-defined]
    ticks = [t for t in TICKS if low <= t <= high]
    axes.set_xticks(ticks, [f"{t:g}x" for t in ticks])  # type: ignore[attr-defined]
    axes.minorticks_off()  # type: ignore[attr-defined]
