"""Viewer benchmark: the first frame of a cine clip, and the rate it plays at.

The requirement it checks (issue 4, item 9): in headless Chromium, the time
from opening the study to the first frame of the 120-frame SonoSite clip
(``color3d_jpeg_baseline.dcm`` of pydicom-data, JPEG Baseline, 30 frames a
second) on screen is under half of what Orthanc's web viewer plug-in
(Debian's ``orthanc-webviewer``) takes in the same run, and the clip plays
at its native rate.

"On screen" is measured the same way for both viewers, by a probe in the
page (:mod:`_viewer_probe`): the first image drawn onto a visible canvas,
in milliseconds from the start of the page's navigation. For the appliance
the page is the study page (it shows the clip first and plays it by
itself); for Orthanc, its viewer opened on the clip's series. Each round
opens each viewer in a fresh browser context (nothing cached), in a
rotating order; the first round meets cold server caches, and is shown
apart. The rate shown is the number of images drawn per second over three
seconds once every frame is in. Orthanc's viewer has no cine playback: it is
stepped through with the mouse wheel, one notch per frame, each notch waiting
for its frame, and that rate is reported instead.

Run it as ``python bench/viewer.py [--rounds N] [--work-dir DIR] [--out FILE]
[--json FILE] [--skip-orthanc]``; it exits 0 when both checks pass.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import _appliance_http
import _orthanc_http
import pydicom
from _peers import LOOPBACK, SENDER_AE
from _viewer_probe import DRAW_RATE, FIRST_DRAW, PROBE, WHEEL_STEPS
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE

logger = logging.getLogger("bench.viewer")

DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "appliance-viewer-bench"
CLIP = "color3d_jpeg_baseline.dcm"
CHROMIUM = Path("/usr/bin/chromium")
# The flags of the end-to-end tests (tests/web/browser.py)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
WAIT_SECONDS = 60.0
RATE_SECONDS = 3.0
MAX_FIRST_FRAME_RATIO = 0.5
RATE_TOLERANCE = 0.10

Measure = Callable[[Any, int], dict[str, float]]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 if both checks pass, else 1."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("playwright is missing: pip install -e '.[test]'", file=sys.stderr)
        return 1
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is missing: apt-get install chromium", file=sys.stderr)
        return 1

    clip = Path(str(get_testdata_file(CLIP)))
    native = 1000.0 / float(pydicom.dcmread(clip, stop_before_pixels=True).FrameTime)
    work_dir = args.work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work_dir))
    notes: list[str] = []
    samples: dict[str, list[dict[str, float]]] = {}
    try:
        with ExitStack() as stack:
            viewers = _viewers(args, clip, work_dir, run_dir, stack, notes)
            playwright = stack.enter_context(sync_playwright())
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
            stack.callback(browser.close)
            samples = _run_rounds(browser, viewers, args.rounds, work_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

    result = _result(samples, native, args.rounds, notes)
    text = format_markdown(result)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(check["ok"] for check in result["checks"]) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds (5)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    parser.add_argument("--out", type=Path, help="also write the report here")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--skip-orthanc", action="store_true", help="no Orthanc")
    parser.add_argument(
        "--appliance-cmd", type=shlex.split, help="how to call the appliance"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    return args


def _viewers(
    args: argparse.Namespace,
    clip: Path,
    work_dir: Path,
    run_dir: Path,
    stack: ExitStack,
    notes: list[str],
) -> dict[str, Measure]:
    """Start both servers with the clip stored; return how to measure each."""
    command = args.appliance_cmd or _appliance_http.default_command()
    served = stack.enter_context(
        _appliance_http.serving(
            command, run_dir / "appliance", work_dir / "appliance.log"
        )
    )
    study_uid = _send(served.dicom_port, clip)
    viewers: dict[str, Measure] = {
        "appliance": lambda browser, round_: _appliance(
            browser, served, study_uid, work_dir, round_
        )
    }

    if args.skip_orthanc:
        notes.append("Orthanc not run: --skip-orthanc.")
    elif not _orthanc_http.ORTHANC.exists():
        notes.append("Orthanc not run: /usr/sbin/Orthanc is missing.")
    elif not _orthanc_http.has_web_viewer():
        notes.append(
            "Orthanc not run: its web viewer plug-in is missing "
            "(apt-get install orthanc-webviewer)."
        )
    else:
        orthanc = stack.enter_context(
            _orthanc_http.running(
                run_dir / "orthanc", work_dir / "orthanc.log", web_viewer=True
            )
        )
        instance = _orthanc_http.upload(orthanc.connection(), clip.read_bytes())
        series = _orthanc_http.request(
            orthanc.connection(), "GET", f"/instances/{instance}"
        )["ParentSeries"]
        viewers["Orthanc web viewer"] = lambda browser, round_: _orthanc(
            browser, orthanc, series, work_dir, round_
        )
    return viewers


def _send(port: int, clip: Path) -> str:
    """Store the clip in the appliance as a new study; return its UID."""
    dataset = pydicom.dcmread(clip)
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    ae = AE(SENDER_AE)
    ae.maximum_pdu_size = 0
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    assoc = ae.associate(LOOPBACK, port, ae_title="APPLIANCE")
    if not assoc.is_established:
        raise RuntimeError("the appliance refused the association")
    try:
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    if getattr(status, "Status", None) != 0:
        raise RuntimeError(f"storing the clip failed: {status}")
    return str(dataset.StudyInstanceUID)


def _run_rounds(
    browser: Any, viewers: dict[str, Measure], rounds: int, work_dir: Path
) -> dict[str, list[dict[str, float]]]:
    names = list(viewers)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            sample = viewers[name](browser, number)
            samples[name].append(sample)
            logger.info("Round %d: %s %s", number + 1, name, _brief(sample))
    return samples


def _appliance(
    browser: Any,
    served: _appliance_http.ServedAppliance,
    study_uid: str,
    work_dir: Path,
    round_: int,
) -> dict[str, float]:
    """Open the study page in a fresh context; time the clip's first frame."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(f"{served.url}/login")
        page.fill("input[name=name]", _appliance_http.USER)
        page.fill("input[name=password]", _appliance_http.PASSWORD)
        page.click("main button[type=submit]")
        page.wait_for_selector("form#search")

        context.add_init_script(PROBE)
        page.goto(f"{served.url}/studies/{study_uid}", wait_until="commit")
        first = _wait_for(page, FIRST_DRAW)
        _wait_for(page, "window.applianceViewer.stats.allLoadedMs")
        stats = page.evaluate("window.applianceViewer.stats")
        rate = page.evaluate(DRAW_RATE, RATE_SECONDS)
        if round_ == 0:
            page.screenshot(path=str(work_dir / "appliance.png"))
        return {
            "first_ms": first,
            "all_loaded_ms": stats["started"] + stats["allLoadedMs"],
            "shown_fps": rate,
        }
    finally:
        context.close()


def _orthanc(
    browser: Any,
    orthanc: _orthanc_http.OrthancHttp,
    series: str,
    work_dir: Path,
    round_: int,
) -> dict[str, float]:
    """Open Orthanc's viewer on the clip's series; time the first frame."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        context.add_init_script(PROBE)
        page = context.new_page()
        page.goto(
            f"{orthanc.url}/web-viewer/app/viewer.html?series={series}",
            wait_until="commit",
        )
        first = _wait_for(page, FIRST_DRAW)
        if round_ == 0:
            page.screenshot(path=str(work_dir / "orthanc.png"))
        # Its wheel handler is bound once the first image is shown
        time.sleep(0.5)
        steps = 119
        seconds = page.evaluate(WHEEL_STEPS, steps)
        return {"first_ms": first, "stepped_fps": steps / seconds}
    finally:
        context.close()


def _wait_for(page: Any, expression: str) -> float:
    """Poll `expression` in the page until it is truthy; return its value.

    Playwright's ``wait_for_function`` runs a string through ``eval``, which
    the appliance's Content Security Policy forbids; ``evaluate`` is not
    subject to it.
    """
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value = page.evaluate(expression)
        if value:
            return float(value)
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {expression}")
        time.sleep(0.005)


def _brief(sample: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:.1f}" for key, value in sample.items())


def _result(
    samples: dict[str, list[dict[str, float]]],
    native: float,
    rounds: int,
    notes: list[str],
) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for name, taken in samples.items():
        if not taken:
            continue
        row: dict[str, Any] = {
            "first_ms": statistics.median(s["first_ms"] for s in taken),
            "first_cold_ms": taken[0]["first_ms"],
            "first_rounds_ms": [round(s["first_ms"]) for s in taken],
        }
        for key in ("shown_fps", "stepped_fps", "all_loaded_ms"):
            if key in taken[0]:
                row[key] = statistics.median(s[key] for s in taken)
        rows[name] = row
    return {
        "benchmark": "viewer",
        "native_fps": native,
        "rounds": rounds,
        "rows": rows,
        "checks": _checks(rows, native),
        "notes": notes,
    }


def _checks(rows: dict[str, dict[str, Any]], native: float) -> list[dict[str, Any]]:
    appliance = rows.get("appliance", {})
    orthanc = rows.get("Orthanc web viewer")
    checks = []
    if orthanc and appliance:
        ratio = appliance["first_ms"] / orthanc["first_ms"]
        checks.append(
            {
                "ok": ratio < MAX_FIRST_FRAME_RATIO,
                "text": f"first frame in {ratio:.2f}x Orthanc's time "
                f"(limit {MAX_FIRST_FRAME_RATIO:.2f}x)",
            }
        )
    else:
        checks.append({"ok": False, "text": "first frame not compared with Orthanc"})
    shown = appliance.get("shown_fps", 0.0)
    checks.append(
        {
            "ok": abs(shown - native) <= RATE_TOLERANCE * native,
            "text": f"the clip plays at {shown:.1f} frames a second (native "
            f"{native:.1f}, tolerance {RATE_TOLERANCE:.0%})",
        }
    )
    return checks


def format_markdown(result: dict[str, Any]) -> str:
    """Return the report: a table per viewer, the checks and the notes."""
    lines = [
        "## Viewer benchmark",
        "",
        f"The 120-frame SonoSite JPEG Baseline clip ({result['native_fps']:.1f} "
        "frames a second) in headless Chromium; first frame on screen in ms "
        f"from the page's navigation; median of {result['rounds']} rounds, each "
        "in a fresh browser context, in a rotating order; the first round meets "
        "cold server caches.",
        "",
        "| viewer | first frame ms | first round ms | rounds ms | frames shown/s |"
        " all frames in ms |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for name, row in result["rows"].items():
        rate = row.get("shown_fps")
        shown = (
            f"{rate:.1f} (cine)"
            if rate is not None
            else (f"{row['stepped_fps']:.1f} (wheel steps; no cine)")
        )
        loaded = row.get("all_loaded_ms")
        lines.append(
            f"| {name} | {row['first_ms']:.0f} | {row['first_cold_ms']:.0f} "
            f"| {' '.join(map(str, row['first_rounds_ms']))} | {shown} "
            f"| {'-' if loaded is None else f'{loaded:.0f}'} |"
        )
    lines.append("")
    lines += [
        f"- {'PASS' if c['ok'] else 'FAIL'}: {c['text']}" for c in result["checks"]
    ]
    lines += [f"- {note}" for note in result["notes"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
