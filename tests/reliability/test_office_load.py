"""Two minutes of a busy office: five people browse, the modality sends, a backup runs.

Against the real ``appliance serve`` over loopback: five logged-in HTTP
clients (login, study list, study page, thumbnails and the clip's frames,
over and over), a pynetdicom modality sending associations of a few
instances, and ``appliance backup run`` into a scratch folder again and
again, all at once for two minutes. Every request, store and backup must
succeed, every acknowledged instance must be kept, the last snapshot must
verify, and the log must never mention a locked database.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, RunningAppliance, make_appliance
from tests.dicom_helpers import renamed_copy, send_datasets
from tests.reliability.support import (
    Modality,
    assert_index_matches_storage,
    assert_kept,
    read_sources,
    wait_until_settled,
)
from tests.web_session import WebSession

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECONDS = 120.0
USERS = 5
PASSWORD = "a long office load password"
THINK = 0.1
_STUDY = re.compile(r'href="(/studies/[^"]+)"')
_THUMBNAIL = re.compile(r"/instances/\d+/thumbnail")
_CLIP = re.compile(r'"frame": "(/instances/\d+/frames/)", "frames": (\d+)')


@pytest.fixture
def office(
    tmp_path: Path, ultrasound_files: dict[str, Path]
) -> Iterator[RunningAppliance]:
    """A running appliance with a backup folder, five users and two studies."""
    probe = subprocess.run(
        [str(BIN / "appliance"), "backup", "run", "--help"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip("`appliance backup run` does not exist yet")

    backups = tmp_path / "backups"
    backups.mkdir()
    appliance = make_appliance(
        tmp_path / "data", extra_env={"APPLIANCE_BACKUP_DIR": str(backups)}
    )
    for number in range(USERS):
        added = appliance.cli(
            "user", "add", f"user{number}", "--role", "clinician", stdin=PASSWORD + "\n"
        )
        assert added.returncode == 0, added.stderr
    appliance.start()
    try:
        wait_until_settled(appliance)
        first = [
            renamed_copy(ultrasound_files[key], patient_name="LOAD^OFFICE")
            for key in ("sonosite_cine", "ge_rgb", "aloka_palette")
        ]
        assert send_datasets(appliance.dicom_port, first) == [0, 0, 0]
        yield appliance
    finally:
        appliance.kill()


class Browser(threading.Thread):
    """One person: logs in, then opens the list, a study and its clip."""

    def __init__(self, appliance: RunningAppliance, name: str, deadline: float) -> None:
        super().__init__(daemon=True)
        self.web = WebSession(f"http://127.0.0.1:{appliance.http_port}")
        self.name_ = name
        self.deadline = deadline
        self.requests = 0
        self.failures: list[str] = []

    def run(self) -> None:
        try:
            login = self.web.login(self.name_, PASSWORD)
            self._expect(login.status == 302, f"login: {login.status}")
            while time.monotonic() < self.deadline and not self.failures:
                self._one_visit()
        except Exception as exc:
            self.failures.append(f"{self.name_}: {exc!r}")

    def _one_visit(self) -> None:
        listing = self._get("/")
        studies = _STUDY.findall(listing)
        self._expect(bool(studies), "the study list shows no study")
        for study in studies[:2]:
            time.sleep(THINK)
            page = self._get(study)
            for thumbnail in sorted(set(_THUMBNAIL.findall(page))):
                self._get(thumbnail, text=False)
            for frames, count in _CLIP.findall(page):
                for number in range(1, int(count) + 1, 3):
                    if time.monotonic() > self.deadline:
                        return
                    self._get(f"{frames}{number}", text=False)

    def _get(self, path: str, text: bool = True) -> str:
        reply = self.web.get(path)
        self.requests += 1
        self._expect(reply.status == 200, f"GET {path}: {reply.status}")
        return reply.text if text else ""

    def _expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(f"{self.name_}: {what}")
            raise AssertionError(what)


class Backups(threading.Thread):
    """Runs ``appliance backup run`` again and again until the deadline."""

    def __init__(self, appliance: RunningAppliance, deadline: float) -> None:
        super().__init__(daemon=True)
        self.appliance = appliance
        self.deadline = deadline
        self.runs = 0
        self.failures: list[str] = []

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            result = self.appliance.cli("backup", "run")
            if result.returncode != 0:
                self.failures.append(f"backup run: {result.stderr[-500:]}")
                return
            self.runs += 1
            time.sleep(1.0)


def test_five_people_a_modality_and_a_backup_for_two_minutes(
    office: RunningAppliance, ultrasound_files: dict[str, Path]
) -> None:
    deadline = time.monotonic() + SECONDS
    sources = read_sources(
        ultrasound_files[key] for key in ("ge_rgb", "philips_palette", "sonosite_cine")
    )
    modality = Modality(office.dicom_port, sources, pause=0.5, deadline=deadline)
    browsers = [Browser(office, f"user{n}", deadline) for n in range(USERS)]
    backups = Backups(office, deadline)

    workers: list[threading.Thread] = [modality, backups, *browsers]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=SECONDS + 180)
    modality.halt.set()

    failures = modality.failures + backups.failures
    failures += [failure for browser in browsers for failure in browser.failures]
    assert failures == []
    assert all(not worker.is_alive() for worker in workers), "a worker hangs"

    requests = sum(browser.requests for browser in browsers)
    print(
        f"\n{requests} requests, {len(modality.acknowledged)} instances stored, "
        f"{backups.runs} backups in {SECONDS:.0f} s"
    )
    assert requests > 100 and len(modality.acknowledged) > 10 and backups.runs > 0

    wait_until_settled(office)
    assert_kept(office, modality.acknowledged)
    assert_index_matches_storage(office)
    verified = office.cli("backup", "verify", "latest")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "database is locked" not in office.log().lower()
