"""End to end in headless Chromium against the real ``appliance serve``.

Log in, search, open a study, watch the cine clip play at its native rate,
download the study; and the first start's admin with its forced password
change. A screenshot of the study page is kept under ``test-artefacts/``.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.web.archive import RENDER_FILES, Patient, data_file, rewrite
from tests.web.browser import ARGS, ARTEFACTS, chromium_path
from tests.web.served import Served, prepare

pytestmark = pytest.mark.e2e

playwright_api = pytest.importorskip("playwright.sync_api")

PASSWORD = "a long test password"
NEW_ADMIN_PASSWORD = "another long password"
MARY = Patient("SMITH^MARY", "E2E-001", "19900512", "F")
CLIP_RATE = 1000.0 / 33.333  # color3d_jpeg_baseline.dcm: Frame Time 33.333 ms


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A started appliance holding one study of today: a clip and an image."""
    root = tmp_path_factory.mktemp("e2e-web")
    appliance = prepare(root / "data")
    appliance.start()
    study_uid = generate_uid()
    today = date.today().strftime("%Y%m%d")
    files = [
        rewrite(
            data_file(RENDER_FILES["cine"]),
            root / "clip.dcm",
            MARY,
            study_uid,
            study_date=today,
            description="Cardiac",
            accession="E2E1",
        ),
        rewrite(
            data_file(RENDER_FILES["palette8"]),
            root / "image.dcm",
            MARY,
            study_uid,
            study_date=today,
            description="Cardiac",
            accession="E2E1",
        ),
    ]
    assert appliance.send(files) == [0, 0]
    added = appliance.cli(
        "user", "add", "doctor", "--role", "clinician", stdin=PASSWORD + "\n"
    )
    assert added.returncode == 0, added.stderr
    yield appliance
    assert appliance.stop() == 0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless."""
    path = chromium_path()
    if path is None:
        pytest.skip("chromium is not installed (installer/dev-setup.sh --test)")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(path), args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (own cookies) with a study-sized window."""
    context = browser.new_context(
        viewport={"width": 1400, "height": 900}, accept_downloads=True
    )
    opened = context.new_page()
    errors: list[str] = []
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert not errors, errors


def wait_until(page: Any, expression: str, timeout: float = 30.0) -> None:
    """Poll a JavaScript expression until it is true.

    Playwright's ``wait_for_function`` evaluates a string, which the pages'
    Content Security Policy forbids; ``evaluate`` is not subject to it.
    """
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


def log_in(page: Any, served: Served, name: str, password: str) -> None:
    """Fill in and send the login form."""
    page.goto(f"{served.url}/")
    assert "/login" in page.url
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("main button[type=submit]")


def test_view_and_play_a_clip_at_its_native_rate(page: Any, served: Served) -> None:
    # Log in and search by a part of the name.
    log_in(page, served, "doctor", PASSWORD)
    page.wait_for_selector("form#search")
    page.fill("input[name=name]", "smith")
    page.click("form#search button[type=submit]")
    row = page.locator("table.studies tbody tr", has_text="SMITH, MARY")
    assert row.count() == 1
    assert "Today" in row.inner_text()
    ARTEFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / "study-list.png"))

    # Open the study: the clip comes first and starts by itself.
    row.locator("a").click()
    page.wait_for_selector("#canvas")
    wait_until(page, "window.applianceViewer.stats.firstFrameMs !== null")
    stats = page.evaluate("window.applianceViewer.stats")
    assert stats["frames"] == 120
    assert stats["rate"] == pytest.approx(CLIP_RATE, rel=0.01)

    # Once every frame is in, count the frames shown over two seconds.
    wait_until(page, "window.applianceViewer.stats.loaded === 120")
    measured = page.evaluate(
        """() => new Promise((resolve) => {
            const stats = window.applianceViewer.stats;
            const start = [stats.framesShown, performance.now()];
            setTimeout(() => resolve(
                (stats.framesShown - start[0]) * 1000 / (performance.now() - start[1])
            ), 2000);
        })"""
    )
    assert measured == pytest.approx(CLIP_RATE, rel=0.15)

    ARTEFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / "study-page.png"))
    (ARTEFACTS / "viewer-timing.txt").write_text(
        f"first frame {stats['firstFrameMs']:.0f} ms after opening the instance\n"
        f"all 120 frames loaded "
        f"{page.evaluate('window.applianceViewer.stats.allLoadedMs'):.0f} ms\n"
        f"cine rate shown {measured:.2f} fps (native {CLIP_RATE:.2f})\n"
    )

    # Download the whole study: a ZIP of both stored files, byte for byte.
    with page.expect_download() as download_info:
        page.click("#download-study")
    saved = Path(download_info.value.path())
    with zipfile.ZipFile(saved) as archive:
        names = archive.namelist()
        assert len(names) == 2
        uids = {pydicom.dcmread(archive.open(name)).SOPInstanceUID for name in names}
    assert len(uids) == 2


def test_first_admin_must_choose_a_password(page: Any, served: Served) -> None:
    one_time = served.one_time_password()
    assert one_time, served.log()

    log_in(page, served, "admin", one_time)
    page.wait_for_selector("input[name=new]")
    assert page.url.endswith("/account/password")

    # Until the password is changed, every page leads back here.
    page.goto(f"{served.url}/")
    assert page.url.endswith("/account/password")

    page.fill("input[name=current]", one_time)
    page.fill("input[name=new]", NEW_ADMIN_PASSWORD)
    page.fill("input[name=confirm]", NEW_ADMIN_PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_selector("form#search")
    assert "SMITH, MARY" in page.inner_text("table.studies")
