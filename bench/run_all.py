"""Every benchmark in one run: the appliance, Orthanc and the bare baselines.

Runs, one after the other on this machine, ``ingest.py``, ``rebuild.py``,
``search.py``, ``viewer.py`` and ``backup.py`` (each of which measures the
appliance, Orthanc 1.10 and its bare baseline side by side, in turns), then
writes ``bench/RESULTS.md`` (a table of ratios, the checks, each
benchmark's own report, the date and the machine) and ``bench/results.png``
(the ratios as a chart).

Run it as ``python bench/run_all.py [--quick] [--only NAME ...]
[--skip-orthanc] [--note TEXT] [--results FILE] [--chart FILE]``. A
benchmark that fails or times out is reported as such and the others still
run; the exit status is 0 only when every benchmark ran and passed its
checks. ``--quick`` is a smoke run (a round each, small sets) that writes
into the temporary folder unless told where.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import _chart
from _results import PARSERS, Metric, checks

logger = logging.getLogger("bench.run_all")

BENCH = Path(__file__).resolve().parent
WORK_DIR = Path(tempfile.gettempdir()) / "appliance-bench"
RESULTS = BENCH / "RESULTS.md"
CHART = BENCH / "results.png"
LOAD_SAMPLE_SECONDS = 10.0


@dataclass(frozen=True)
class Benchmark:
    """One script and its options for a full and for a quick run."""

    name: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    json: bool = False
    orthanc: bool = True
    timeout: float = 1200.0


BENCHMARKS = (
    # Seven rounds: on a shared 2-core machine, medians of three moved by a
    # tenth from one run to the next.
    Benchmark("ingest", ("--rounds", "7"), ("--rounds", "1")),
    Benchmark("rebuild", ("--rounds", "3"), ("--files", "200", "--rounds", "1")),
    Benchmark("search", (), ("--quick",), json=True),
    Benchmark("viewer", ("--rounds", "5"), ("--rounds", "1"), json=True),
    Benchmark(
        "backup",
        ("--rounds", "3"),
        ("--rounds", "1", "--scale", "0.1"),
        orthanc=False,
    ),
)


@dataclass
class Outcome:
    """What one benchmark left: its report, its numbers and how it ended."""

    name: str
    status: str = "not run"
    seconds: float = 0.0
    report: str = ""
    metrics: list[Metric] = field(default_factory=list)
    checks: list[tuple[bool, str]] = field(default_factory=list)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; write the results; 0 if all ran and passed."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logs = WORK_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    started = datetime.now(UTC)
    load = _LoadSampler()
    load.start()
    outcomes = [
        _run(benchmark, args, logs)
        for benchmark in BENCHMARKS
        if not args.only or benchmark.name in args.only
    ]
    load.stop()

    metrics = [metric for outcome in outcomes for metric in outcome.metrics]
    title = f"Appliance against baselines and Orthanc, {started:%Y-%m-%d}"
    for folder in {args.results.parent, args.chart.parent}:
        folder.mkdir(parents=True, exist_ok=True)
    chart_note = _chart.draw(metrics, args.chart, title)
    text = format_results(args, outcomes, started, load, chart_note)
    args.results.write_text(text)
    print(text)
    logger.info("Wrote %s and %s", args.results, args.chart)
    passed = all(o.status == "passed" for o in outcomes)
    return 0 if passed else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[b.name for b in BENCHMARKS],
        help="run only these benchmarks",
    )
    parser.add_argument("--skip-orthanc", action="store_true", help="no Orthanc")
    parser.add_argument("--note", default="", help="a line on the run's conditions")
    parser.add_argument("--results", type=Path, help=f"markdown ({RESULTS})")
    parser.add_argument("--chart", type=Path, help=f"PNG chart ({CHART})")
    args = parser.parse_args(argv)

    # A smoke run never overwrites the numbers kept in the repository
    folder = WORK_DIR / "quick" if args.quick else BENCH
    args.results = args.results or folder / RESULTS.name
    args.chart = args.chart or args.results.with_name(CHART.name)
    return args


def _run(benchmark: Benchmark, args: argparse.Namespace, logs: Path) -> Outcome:
    """Run one benchmark script; read back its report and numbers."""
    outcome = Outcome(benchmark.name)
    numbers = WORK_DIR / f"{benchmark.name}.json"
    numbers.unlink(missing_ok=True)
    argv = [sys.executable, str(BENCH / f"{benchmark.name}.py")]
    argv += list(benchmark.quick if args.quick else benchmark.full)
    # A folder of its own: a script run by hand at the same time cannot
    # trample on its data (each keeps its test data there between runs)
    argv += ["--work-dir", str(WORK_DIR / benchmark.name)]
    if benchmark.json:
        argv += ["--json", str(numbers)]
    if args.skip_orthanc and benchmark.orthanc:
        argv.append("--skip-orthanc")

    log_path = logs / f"{benchmark.name}.log"
    logger.info("Running %s (log: %s)", " ".join(argv[1:]), log_path)
    started = time.monotonic()
    try:
        with log_path.open("wb") as log:
            result = subprocess.run(
                argv,
                cwd=BENCH.parent,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                timeout=benchmark.timeout,
                check=False,
            )
    except subprocess.TimeoutExpired:
        outcome.status = f"timed out after {benchmark.timeout:.0f} s; see {log_path}"
        return outcome
    finally:
        outcome.seconds = time.monotonic() - started

    outcome.report = result.stdout.decode(errors="replace").strip()
    outcome.checks = checks(outcome.report)
    if "## " not in outcome.report:
        outcome.status = f"failed (exit {result.returncode}); see {log_path}"
        return outcome
    data = json.loads(numbers.read_text()) if numbers.exists() else None
    outcome.metrics = PARSERS[benchmark.name](outcome.report, data)
    outcome.status = "passed" if result.returncode == 0 else "a check failed"
    logger.info("%s: %s in %.0f s", benchmark.name, outcome.status, outcome.seconds)
    return outcome


class _LoadSampler:
    """Samples the one-minute load average while the benchmarks run."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(LOAD_SAMPLE_SECONDS):
                return

    def describe(self) -> str:
        if not self.samples:
            return "not sampled"
        return (
            f"median {statistics.median(self.samples):.2f}, highest "
            f"{max(self.samples):.2f} (one-minute load average, sampled every "
            f"{LOAD_SAMPLE_SECONDS:.0f} s)"
        )


def format_results(
    args: argparse.Namespace,
    outcomes: list[Outcome],
    started: datetime,
    load: _LoadSampler,
    chart_note: str | None,
) -> str:
    """Return ``RESULTS.md``: machine, ratios, checks, chart and the reports."""
    minutes = sum(o.seconds for o in outcomes) / 60
    lines = [
        "# Benchmark results",
        "",
        f"`python bench/run_all.py{' --quick' if args.quick else ''}` on "
        f"{started:%Y-%m-%d %H:%M} UTC; all benchmarks took {minutes:.0f} min.",
        "",
        *_machine(load),
    ]
    if args.note:
        lines.append(f"- Conditions: {args.note}")
    lines += ["", "## Ratios", "", *_ratio_table(outcomes), ""]
    lines += [
        "Times: lower is better, so a ratio under 1 means the appliance was "
        "faster. Rates (frames per second): higher is better.",
        "",
        "## Checks",
        "",
    ]
    for outcome in outcomes:
        lines.append(
            f"- **{outcome.name}** ({outcome.seconds:.0f} s): {outcome.status}"
        )
        lines += [
            f"  - {'PASS' if ok else 'FAIL'}: {text}" for ok, text in outcome.checks
        ]
    lines += ["", "## Chart", ""]
    lines.append(chart_note or f"![ratios]({args.chart.name})")
    for outcome in outcomes:
        if outcome.report:
            lines += ["", outcome.report.replace("\n## ", "\n### ")]
    return "\n".join(lines) + "\n"


def _ratio_table(outcomes: list[Outcome]) -> list[str]:
    lines = [
        "| benchmark | measure | appliance | bare baseline | Orthanc 1.10 "
        "| appliance ÷ baseline | appliance ÷ Orthanc |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for outcome in outcomes:
        if not outcome.metrics:
            lines.append(f"| {outcome.name} | {outcome.status} | | | | | |")
        for m in outcome.metrics:
            baseline = _value(m.baseline, m.unit)
            if m.baseline is not None and m.baseline_is:
                baseline += f" ({m.baseline_is})"
            lines.append(
                f"| {m.benchmark} | {m.measure} | {_value(m.appliance, m.unit)} "
                f"| {baseline} | {_value(m.orthanc, m.unit)} "
                f"| {_ratio(m.appliance, m.baseline)} "
                f"| {_ratio(m.appliance, m.orthanc)} |"
            )
    return lines


def _machine(load: _LoadSampler) -> list[str]:
    memory = _meminfo_gib()
    return [
        f"- Machine (`uname -a`): `{_uname()}`",
        f"- Cores (nproc): {os.cpu_count()}; memory: {memory}",
        f"- Load during the run: {load.describe()}",
        f"- Versions: Python {platform.python_version()}, " + ", ".join(_versions()),
    ]


def _uname() -> str:
    try:
        result = subprocess.run(["uname", "-a"], capture_output=True, text=True)
    except OSError:
        return " ".join(platform.uname())
    return result.stdout.strip()


def _meminfo_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _versions() -> list[str]:
    from importlib import metadata

    found = []
    for package in ("pydicom", "pynetdicom", "playwright"):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} missing")
    for label, argv in (
        ("Orthanc", ["/usr/sbin/Orthanc", "--version"]),
        ("Chromium", ["/usr/bin/chromium", "--version"]),
        ("DCMTK storescu", ["/usr/bin/storescu", "--version"]),
    ):
        found.append(f"{label} {_first_line(argv)}")
    return found


def _first_line(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "missing"
    match = re.search(r"\d+\.\d+[.\d]*", result.stdout)
    return match.group().rstrip(".") if match else "unknown"


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:,.{digits}f} {unit}"


def _ratio(value: float | None, other: float | None) -> str:
    if value is None or not other:
        return "-"
    return f"{value / other:.2f}"


if __name__ == "__main__":
    sys.exit(main())
