"""Sized for the office: five people browsing while the modality sends.

Against the real process over loopback: five logged-in sessions open the
list, a study, its thumbnails and every frame of its clip, over and over,
while a modality stores files. Every request must succeed; the log must not
mention a locked database.
"""

from __future__ import annotations

import http.cookiejar
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.web.archive import RENDER_FILES, Patient, data_file, rewrite
from tests.web.served import Served, prepare

pytestmark = pytest.mark.e2e

PASSWORD = "a long load password"
USERS = 5
ROUNDS = 3
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("load")
    appliance = prepare(root / "data")
    appliance.start()
    for number in range(USERS):
        result = appliance.cli(
            "user", "add", f"user{number}", "--role", "clinician", stdin=PASSWORD + "\n"
        )
        assert result.returncode == 0, result.stderr
    yield appliance
    assert appliance.stop() == 0


def opener_for(served: Served, name: str) -> urllib.request.OpenerDirector:
    """A cookie-keeping client, logged in through the form."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    page = opener.open(f"{served.url}/login").read().decode()
    token = _CSRF.search(page).group(1)  # type: ignore[union-attr]
    body = urllib.parse.urlencode(
        {"name": name, "password": PASSWORD, "csrf_token": token}
    ).encode()
    opener.open(f"{served.url}/login", body).read()
    return opener


def browse(
    served: Served,
    opener: urllib.request.OpenerDirector,
    study_uid: str,
    failures: list[str],
) -> None:
    def get(path: str) -> bytes:
        with opener.open(f"{served.url}{path}", timeout=60) as response:
            if response.status != 200 or "/login" in response.url:
                failures.append(f"{path}: {response.status} {response.url}")
            return bytes(response.read())

    for _ in range(ROUNDS):
        get("/")
        page = get(f"/studies/{study_uid}").decode()
        for thumbnail in set(re.findall(r"/instances/\d+/thumbnail", page)):
            get(thumbnail)
        clip = re.search(r'"frame": "(/instances/\d+/frames/)", "frames": 120', page)
        assert clip, "no clip on the study page"
        for number in range(1, 121):
            get(f"{clip.group(1)}{number}")


def test_five_users_while_the_modality_sends(served: Served, tmp_path: Path) -> None:
    today = date.today().strftime("%Y%m%d")
    patient = Patient("LOAD^TEST", "LOAD1")
    study_uid = generate_uid()
    first = [
        rewrite(
            data_file(RENDER_FILES["cine"]),
            tmp_path / "clip.dcm",
            patient,
            study_uid,
            study_date=today,
        ),
        rewrite(
            data_file(RENDER_FILES["rgb"]),
            tmp_path / "rgb.dcm",
            patient,
            study_uid,
            study_date=today,
        ),
    ]
    assert served.send(first) == [0, 0]

    # The modality keeps sending while people browse.
    incoming = [
        rewrite(
            data_file(RENDER_FILES[key]),
            tmp_path / f"in{n}.dcm",
            patient,
            generate_uid(),
            study_date=today,
        )
        for n, key in enumerate(["cine", "palette8", "j2k", "rgb"] * 3)
    ]
    statuses: list[int] = []
    sender = threading.Thread(target=lambda: statuses.extend(served.send(incoming)))

    failures: list[str] = []
    openers = [opener_for(served, f"user{n}") for n in range(USERS)]
    workers = [
        threading.Thread(target=browse, args=(served, o, study_uid, failures))
        for o in openers
    ]
    started = time.monotonic()
    sender.start()
    for worker in workers:
        worker.start()
    for worker in [*workers, sender]:
        worker.join(timeout=300)
    elapsed = time.monotonic() - started

    assert not failures, failures[:5]
    assert statuses == [0] * len(incoming)
    assert "locked" not in served.log().lower()
    requests = USERS * ROUNDS * (2 + 2 + 120)
    print(f"\n{requests} requests by {USERS} users in {elapsed:.1f} s")
