"""The worklist end to end: the front desk schedules on the web, the modality finds it.

A front-desk user logs in to the real ``appliance serve`` over HTTP, fills
in the new-entry form (as a plain HTTP client, then in headless Chromium),
and DCMTK's ``findscu -W``, calling as a registered modality, gets the entry
back with its Scheduled Procedure Step; removed on the web, it is gone.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.conftest import RunningAppliance, make_appliance
from tests.dicom_services_helpers import findscu, register
from tests.web.browser import ARGS, ARTEFACTS, chromium_path
from tests.web_session import WebSession

pytestmark = pytest.mark.e2e

PASSWORD = "reception counter 42"
MODALITY = "SEQUOIA"
STEP = "ScheduledProcedureStepSequence[0]"
# What the modality asks for (PS3.4 Table K.6-1), its own AE title and today.
RETURN_KEYS = [
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "RequestedProcedureID",
    "StudyInstanceUID",
    f"{STEP}.ScheduledStationAETitle={MODALITY}",
    f"{STEP}.ScheduledProcedureStepStartDate={date.today():%Y%m%d}",
    f"{STEP}.ScheduledProcedureStepStartTime",
    f"{STEP}.Modality=US",
    f"{STEP}.ScheduledProcedureStepDescription",
    f"{STEP}.ScheduledProcedureStepID",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAppliance]:
    """A started appliance with the modality registered and a front-desk user."""
    running = make_appliance(tmp_path_factory.mktemp("worklist-web") / "data")
    register(running, MODALITY)
    added = running.cli("user", "add", "desk", "--role", "frontdesk", stdin=PASSWORD)
    assert added.returncode == 0, added.stderr
    running.start()
    _wait_for_web(running)
    yield running
    assert running.stop() == 0


def _wait_for_web(appliance: RunningAppliance, timeout: float = 30.0) -> None:
    url = f"http://127.0.0.1:{appliance.http_port}/healthz"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            assert time.monotonic() < deadline, f"no web:\n{appliance.log()}"
            time.sleep(0.2)


def _desk(appliance: RunningAppliance) -> WebSession:
    web = WebSession(f"http://127.0.0.1:{appliance.http_port}")
    assert web.login("desk", PASSWORD).status == 302
    return web


def _worklist(
    appliance: RunningAppliance, accession: str, out: Path
) -> list[pydicom.Dataset]:
    keys = [*RETURN_KEYS, f"AccessionNumber={accession}"]
    return findscu(appliance, "-W", keys, out, calling_ae=MODALITY)


def test_an_entry_made_on_the_web_is_in_the_modality_worklist(
    served: RunningAppliance, tmp_path: Path
) -> None:
    web = _desk(served)
    fields = {
        "family_name": "Müller",
        "given_name": "Anna",
        "patient_id": "WEB-E2E-1",
        "issuer": "CLINIC-A",
        "birth_date": "1985-02-14",
        "sex": "F",
        "accession_number": "WEBE2E1",
        "scheduled_date": date.today().isoformat(),
        "scheduled_time": "10:45",
        "description": "Obstetric ultrasound",
        "station_ae": MODALITY,
        "modality": "US",
    }

    reply = web.post_form("/worklist/new", fields)

    assert reply.status == 302, reply.text[:500]
    listing = web.get(reply.location)
    assert listing.status == 200 and "WEBE2E1" in listing.text
    (found,) = _worklist(served, "WEBE2E1", tmp_path / "find1")
    assert str(found.PatientName) == "Müller^Anna"
    assert (found.PatientID, found.IssuerOfPatientID) == ("WEB-E2E-1", "CLINIC-A")
    assert (found.PatientBirthDate, found.PatientSex) == ("19850214", "F")
    assert found.AccessionNumber == "WEBE2E1"
    assert found.StudyInstanceUID and found.RequestedProcedureID
    step = found.ScheduledProcedureStepSequence[0]
    assert step.ScheduledStationAETitle == MODALITY
    assert step.ScheduledProcedureStepStartDate == f"{date.today():%Y%m%d}"
    assert step.ScheduledProcedureStepStartTime == "104500"
    assert step.Modality == "US"
    assert step.ScheduledProcedureStepDescription == "Obstetric ultrasound"
    assert step.ScheduledProcedureStepID.startswith("SPS")

    # Removed on the web (after the confirmation page), the modality no
    # longer finds it.
    link = re.search(r'href="(/worklist/\d+/remove)"', listing.text)
    assert link, listing.text[:2000]
    removed = web.post_form(link.group(1), {})
    assert removed.status == 302, removed.text[:500]
    assert _worklist(served, "WEBE2E1", tmp_path / "find2") == []


def test_a_refused_entry_never_reaches_the_modality(
    served: RunningAppliance, tmp_path: Path
) -> None:
    web = _desk(served)
    fields = {
        "family_name": "Doe\\Roe",
        "given_name": "Jane",
        "patient_id": "WEB-E2E-2",
        "accession_number": "WEBE2E2",
        "scheduled_date": date.today().isoformat(),
        "scheduled_time": "11:00",
        "modality": "US",
    }

    reply = web.post_form("/worklist/new", fields)

    assert reply.status == 400 and "No backslash" in reply.text
    assert 'value="WEB-E2E-2"' in reply.text
    assert _worklist(served, "WEBE2E2", tmp_path / "find") == []


# The same in headless Chromium: the date and time inputs as a browser sends
# them.


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless (see :mod:`tests.web.browser`)."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    path = chromium_path()
    if path is None:
        pytest.skip("chromium is not installed (installer/dev-setup.sh --test)")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(path), args=ARGS)
        yield launched
        launched.close()


def test_the_front_desk_fills_in_the_form_in_a_browser(
    served: RunningAppliance, browser: Any, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{served.http_port}"
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{base}/")
        page.fill("input[name=name]", "desk")
        page.fill("input[name=password]", PASSWORD)
        page.click("main button[type=submit]")
        page.click("nav >> text=Worklist")
        page.click("text=New entry")

        ARTEFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTEFACTS / "worklist-form.png"), full_page=True)
        page.fill("input[name=family_name]", "Roe")
        page.fill("input[name=given_name]", "Rita")
        page.fill("input[name=patient_id]", "WEB-E2E-3")
        page.fill("input[name=birth_date]", "1990-05-06")
        page.select_option("select[name=sex]", "F")
        page.fill("input[name=accession_number]", "WEBE2E3")
        page.fill("input[name=scheduled_time]", "14:20")
        page.fill("input[name=description]", "Pelvic ultrasound")
        page.fill("input[name=station_ae]", MODALITY)
        page.click("main button[type=submit]")

        assert "/worklist/?when=today" in page.url
        assert "Scheduled Roe, Rita" in page.content()
        assert "WEBE2E3" in page.inner_text("table.worklist")
        page.screenshot(path=str(ARTEFACTS / "worklist.png"), full_page=True)
    finally:
        context.close()
    assert not errors, errors

    (found,) = _worklist(served, "WEBE2E3", tmp_path / "find")
    assert (str(found.PatientName), found.PatientID) == ("Roe^Rita", "WEB-E2E-3")
    assert found.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == (
        "142000"
    )


def test_no_patient_data_in_the_log(served: RunningAppliance) -> None:
    log = served.log()

    assert "Worklist query from SEQUOIA" in log
    assert "scheduled by desk" in log
    for secret in ("Müller", "WEB-E2E-1", "19850214", "Roe^Rita", "WEB-E2E-3"):
        assert secret not in log
