"""Search benchmark: a name search in a big archive, appliance against Orthanc.

The requirement it measures (issue 10): on an index of 20,000 studies and a
million instances, the median and 95th-percentile time of a name search
through the appliance's own query (:func:`appliance.index.browse.find_studies`,
one page of 50 rows, newest first) and through its web (``GET /?name=...``,
the study list page, logged in), against Orthanc's ``POST /tools/find`` on the
same studies (``PatientName`` ``*word*``, study level, 50 answers with their
main tags, which is what the study list shows).

The appliance's index is written directly through its own schema, so no
DICOM file stands behind its rows. Orthanc only fills its index from DICOM
files: it gets the same patients and studies with one tiny instance each
(20,000 instances, not a million), which the report says. Both are built
once and kept in the work folder.

The searches are the same words for all three, one at a time, in a rotating
order. Run it as ``python bench/search.py [--quick] [--queries N]
[--work-dir DIR] [--out FILE] [--json FILE] [--skip-orthanc]``.
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
import threading
import time
import urllib.parse
from collections.abc import Callable
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import _appliance_http
import _orthanc_http
from _search_data import (
    SearchPlan,
    build_index,
    orthanc_file,
    patients,
    search_words,
    studies,
)

from appliance.index.browse import StudyQuery, find_studies
from appliance.index.schema import open_index_reader

logger = logging.getLogger("bench.search")

DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "appliance-search-bench"
PAGE = 50
WARM_UP = 10
UPLOAD_THREADS = 4
CHECKED_WORDS = 5
QUICK = SearchPlan(studies=2_000, instances=100_000, patients=800)

Search = Callable[[str], int]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 unless a contender failed."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    plan = QUICK if args.quick else SearchPlan()
    queries = args.queries or (40 if args.quick else 200)
    work_dir = args.work_dir.resolve()
    index = build_index(work_dir, plan)
    words = search_words(plan, queries)

    times: dict[str, list[float]] = {}
    notes: list[str] = []
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work_dir))
    try:
        with ExitStack() as stack:
            searches = _contenders(args, plan, index, run_dir, stack, notes)
            notes += _same_answers(searches, words[:CHECKED_WORDS])
            times = _measure(searches, words)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

    result = _result(plan, queries, times, notes)
    text = format_markdown(result)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2,000 studies: a smoke run"
    )
    parser.add_argument("--queries", type=int, help="searches (200; quick: 40)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    parser.add_argument("--out", type=Path, help="also write the report here")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--skip-orthanc", action="store_true", help="no Orthanc")
    parser.add_argument(
        "--appliance-cmd", type=shlex.split, help="how to call the appliance"
    )
    args = parser.parse_args(argv)
    if args.queries is not None and args.queries < 1:
        parser.error("--queries must be at least 1")
    return args


def _contenders(
    args: argparse.Namespace,
    plan: SearchPlan,
    index: Path,
    run_dir: Path,
    stack: ExitStack,
    notes: list[str],
) -> dict[str, Search]:
    """Start what is measured; return a search function for each."""
    conn = stack.enter_context(closing(open_index_reader(index)))
    searches: dict[str, Search] = {"appliance query": _query_search(conn)}

    # The web serves a copy: the service may write to its own index
    data_dir = run_dir / "data"
    data_dir.mkdir()
    shutil.copyfile(index, data_dir / "index.db")
    command = args.appliance_cmd or _appliance_http.default_command()
    logger.info("Starting the appliance on the copied index (it reconciles first)")
    served = stack.enter_context(
        _appliance_http.serving(command, data_dir, args.work_dir / "appliance.log")
    )
    searches["appliance web"] = _web_search(served)

    if args.skip_orthanc:
        notes.append("Orthanc not run: --skip-orthanc.")
        return searches
    if _orthanc_http.ORTHANC.exists() is False:
        notes.append("Orthanc not run: /usr/sbin/Orthanc is missing.")
        return searches
    folder, rate = _orthanc_folder(args.work_dir.resolve(), plan)
    orthanc = stack.enter_context(
        _orthanc_http.running(folder, args.work_dir / "orthanc.log")
    )
    searches["Orthanc /tools/find"] = _orthanc_search(orthanc)
    notes.append(
        f"Orthanc's index holds the same {plan.studies:,} studies and patients "
        f"with one small instance each ({plan.studies:,} instances, not "
        f"{plan.instances:,}): its REST API took them at {rate:.0f} files a "
        f"second here, so a million would take about "
        f"{plan.instances / rate / 60:.0f} minutes to import."
    )
    notes.append(
        "Orthanc's answers come in no particular order; the appliance's page is "
        "sorted, newest study first."
    )
    return searches


def _query_search(conn: Any) -> Search:
    def search(word: str) -> int:
        return len(find_studies(conn, StudyQuery(name=word), None, PAGE).rows)

    return search


def _web_search(served: _appliance_http.ServedAppliance) -> Search:
    opener = _appliance_http.logged_in_opener(served)

    def search(word: str) -> int:
        url = f"{served.url}/?{urllib.parse.urlencode({'name': word})}"
        with opener.open(url, timeout=60) as response:
            body = response.read().decode()
            if response.status != 200 or "/login" in response.url:
                raise RuntimeError(f"the study list answered {response.status}")
        return body.count('<tr class="')

    return search


def _orthanc_search(orthanc: _orthanc_http.OrthancHttp) -> Search:
    conn = orthanc.connection()

    def search(word: str) -> int:
        query = {
            "Level": "Study",
            "Query": {"PatientName": f"*{word}*"},
            "Limit": PAGE,
            "Expand": True,
        }
        return len(_orthanc_http.find(conn, query))

    return search


def _orthanc_folder(work_dir: Path, plan: SearchPlan) -> tuple[Path, float]:
    """Return Orthanc's data folder holding `plan`'s studies, and files/s.

    The studies are imported once; the folder is kept for later runs.
    """
    folder = work_dir / f"orthanc-{plan.studies}"
    marker = folder / "imported.json"
    key = {"studies": plan.studies, "patients": plan.patients, "seed": plan.seed}
    try:
        kept = json.loads(marker.read_text())
        if kept["key"] == key:
            return folder, float(kept["files_per_second"])
    except (OSError, ValueError, KeyError, TypeError):
        pass

    shutil.rmtree(folder, ignore_errors=True)
    logger.info(
        "Importing %d studies into Orthanc (once; kept in %s)", plan.studies, folder
    )
    with _orthanc_http.running(folder, work_dir / "orthanc.log") as orthanc:
        started = time.perf_counter()
        _import(orthanc, plan)
        seconds = time.perf_counter() - started
        count = _orthanc_http.request(orthanc.connection(), "GET", "/statistics")
    if count["CountStudies"] != plan.studies:
        raise RuntimeError(f"Orthanc holds {count['CountStudies']} studies")
    logger.info("Orthanc imported %d studies in %.0f s", plan.studies, seconds)
    rate = plan.studies / seconds
    marker.write_text(json.dumps({"key": key, "files_per_second": rate}))
    return folder, rate


def _import(orthanc: _orthanc_http.OrthancHttp, plan: SearchPlan) -> None:
    people = patients(plan)
    files = [orthanc_file(study, people[study["patient"]]) for study in studies(plan)]
    failures: list[BaseException] = []

    def upload(share: list[bytes]) -> None:
        conn = orthanc.connection()
        try:
            for part10 in share:
                _orthanc_http.upload(conn, part10)
        except BaseException as exc:  # reported once the threads are joined
            failures.append(exc)

    threads = [
        threading.Thread(target=upload, args=(files[n::UPLOAD_THREADS],))
        for n in range(UPLOAD_THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"uploading to Orthanc failed: {failures[0]}")


def _same_answers(searches: dict[str, Search], words: list[str]) -> list[str]:
    """Check that every contender finds a full page, or the same few rows."""
    answers = {word: {name: s(word) for name, s in searches.items()} for word in words}
    differing = [
        word for word, found in answers.items() if len(set(found.values())) > 1
    ]
    if differing:
        logger.warning("The contenders disagree on %s: %s", differing, answers)
        return [f"Rows found differ for {differing}: {answers}."]
    return [
        f"All contenders return the same number of rows for {len(words)} sampled "
        "searches (a full page of 50, or the few that match)."
    ]


def _measure(searches: dict[str, Search], words: list[str]) -> dict[str, list[float]]:
    """Time every search word with each contender, in a rotating order."""
    names = list(searches)
    for name in names:
        for word in words[:WARM_UP]:
            searches[name](word)

    times: dict[str, list[float]] = {name: [] for name in names}
    for number, word in enumerate(words):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            searches[name](word)
            times[name].append(time.perf_counter() - started)
    for name in names:
        logger.info("%s: median %.2f ms", name, statistics.median(times[name]) * 1e3)
    return times


def _result(
    plan: SearchPlan, queries: int, times: dict[str, list[float]], notes: list[str]
) -> dict[str, Any]:
    rows = {
        name: {"median_ms": _ms(statistics.median(t)), "p95_ms": _ms(_p95(t))}
        for name, t in times.items()
    }
    return {
        "benchmark": "search",
        "plan": {
            "studies": plan.studies,
            "instances": plan.instances,
            "patients": plan.patients,
            "queries": queries,
        },
        "rows": rows,
        "notes": notes,
    }


def format_markdown(result: dict[str, Any]) -> str:
    """Return the report: what was searched, a table, and the notes."""
    plan = result["plan"]
    lines = [
        "## Search benchmark",
        "",
        f"Name searches in {plan['studies']:,} studies, {plan['instances']:,} "
        f"instances, {plan['patients']:,} patients (made up); {plan['queries']} "
        "searches (whole surnames, given names and four-letter parts), each by "
        f"every contender in a rotating order; one page of {PAGE} rows.",
        "",
        "| contender | median ms | 95th percentile ms |",
        "|---|---:|---:|",
    ]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | {row['median_ms']:.2f} | {row['p95_ms']:.2f} |")
    lines += [""] + [f"- {note}" for note in result["notes"]]
    return "\n".join(lines)


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


if __name__ == "__main__":
    sys.exit(main())
