"""Admin: the backup page, "Back up now", the banner, and the restore wizard.

Each test builds its own small office: a data folder with one real study
and the three users, a backup folder, a :class:`backup.job.BackupJob` and a
:class:`appliance.restoring.RestoreWizard` whose switch only swaps the
folders (the service's also restarts the listener and the index; see
``tests/test_restore_switch.py``).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydicom.uid import generate_uid

from appliance.restoring import Phase, RestoreStatus, RestoreWizard
from appliance.state import open_state
from appliance.state.audit import recent
from appliance.web import create_app
from appliance.web.backup_words import moment, size
from backup import BackupOptions, list_snapshots
from backup.history import recent_runs, record_run
from backup.job import BackupJob
from backup.lock import TargetLock
from backup.restore import swap
from backup.retention import Retention
from backup.runner import run_and_record
from backup.snapshots import Snapshot
from backup.target import nearly_full, space
from tests.backup_helpers import backup, file_hashes, flip_byte, table_rows, tmpfs
from tests.web.archive import RENDER_FILES, Patient, data_file, rewrite, store_all
from tests.web.conftest import add_users, login, make_options
from tests.web.office import FakeClock, post

WAIT_SECONDS = 120
ANN = Patient("LEE^ANN", "BK-001", "19750301", "F")
BOB = Patient("KIM^BOB", "BK-002", "19820705", "M")


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with one study and the three users, copied by each test."""
    root = tmp_path_factory.mktemp("backup-seed")
    data_dir = root / "data"
    store_all(data_dir, [_study_file(root, ANN, "First visit")])
    add_users(data_dir / "app.db")
    return data_dir


def _study_file(root: Path, patient: Patient, description: str) -> Path:
    return rewrite(
        data_file(RENDER_FILES["palette8"]),
        root / f"{patient.patient_id}.dcm",
        patient,
        generate_uid(),
        study_date=date.today().strftime("%Y%m%d"),
        description=description,
    )


Switch = Callable[[Path], Path | None]


@dataclass
class Office:
    """A data folder, its backups, the wizard and the web app over them."""

    data_dir: Path
    target: Path
    job: BackupJob
    wizard: RestoreWizard
    app: Flask
    clock: FakeClock

    def client(self, name: str | None = None) -> FlaskClient:
        """A browser, logged in as `name` when given."""
        browser = self.app.test_client()
        if name is not None:
            assert login(browser, name).status_code == 302  # type: ignore[attr-defined]
        return browser

    def back_up(self, now: datetime | None = None) -> Snapshot:
        """Make a snapshot now (or as if at `now`) and record it."""
        options = BackupOptions(self.data_dir, self.target, Retention())
        if now is None:
            result = run_and_record(options)
        else:
            result = backup(self.data_dir, self.target, now=now)
            record_run(self.data_dir / "app.db", result)
        assert result.ok, result.error
        return next(s for s in list_snapshots(self.target) if s.name == result.snapshot)

    def actions(self, app_db: Path | None = None) -> list[str]:
        """The newest audit actions first."""
        with closing(open_state(app_db or self.data_dir / "app.db")) as conn:
            return [entry.event.action for entry in recent(conn, 50)]

    def kept_aside(self) -> list[Path]:
        """Data folders a restore moved aside."""
        return sorted(self.data_dir.parent.glob(f"{self.data_dir.name}.before-*"))


def make_office(
    root: Path,
    seed: Path,
    *,
    target: Path | None = None,
    backups_on: bool = True,
    switch: Switch | None = None,
) -> Office:
    """Copy the seed into `root` and build the web app over it."""
    data_dir = root / "data"
    shutil.copytree(seed, data_dir)
    if target is None:
        target = root / "backups"
        target.mkdir()
    job = BackupJob(data_dir, target if backups_on else None, Retention(), "02:30")
    wizard = RestoreWizard(
        data_dir,
        target if backups_on else None,
        switch or (lambda staged: swap(staged, data_dir)),
    )
    clock = FakeClock()
    app = create_app(
        lambda: {"ok": True},
        make_options(data_dir, clock=clock),
        backups=job,
        restore=wizard,
    )
    return Office(data_dir, target, job, wizard, app, clock)


@pytest.fixture
def office(tmp_path: Path, seed: Path) -> Office:
    return make_office(tmp_path, seed)


def page(client: FlaskClient, url: str = "/") -> str:
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def unchanged_view(office: Office) -> tuple[object, ...]:
    """What a refused restore must leave alone (app.db gets audit rows)."""
    return (
        file_hashes(office.data_dir / "storage"),
        table_rows(office.data_dir / "index.db"),
        office.kept_aside(),
        sorted(path.name for path in office.data_dir.parent.iterdir()),
    )


# The status page.


def test_status_page_shows_the_last_backup_next_run_and_free_space(
    office: Office,
) -> None:
    snapshot = office.back_up()
    summary = office.job.summary()

    html = page(office.client("admin1"), "/admin/backup/")

    assert f"{moment(summary.last_success)}, {size(snapshot.bytes)}" in html
    assert "just now" in html or "minute ago" in html
    assert summary.next_run is not None
    assert f"{moment(summary.next_run)} (every night)" in html
    assert f"free of {size(summary.total_bytes)}" in html
    assert str(office.target) in html and "(ready)" in html
    assert "Complete" in html and "the command line" in html
    assert snapshot.name in html
    # Target and data on one disk here: the page notes it, the banner not.
    assert "does not protect against that disk failing" in html


def test_a_failed_attempt_is_shown_with_its_reason(office: Office) -> None:
    office.back_up()
    shutil.rmtree(office.target)
    office.job.run(trigger="schedule")
    office.target.mkdir()

    html = page(office.client("admin1"), "/admin/backup/")

    assert "Latest attempt" in html and "Failed:" in html
    assert "the nightly schedule" in html


# Back up now.


def test_back_up_now_runs_a_real_backup_and_is_audited(office: Office) -> None:
    admin = office.client("admin1")

    response = post(admin, "/admin/backup/now")
    office.job.wait(WAIT_SECONDS)

    assert response.status_code == 302
    assert "Backup started" in page(admin, "/admin/backup/")
    [run] = recent_runs(office.data_dir / "app.db")
    assert run.ok and run.trigger == "web"
    [snapshot] = list_snapshots(office.target)
    assert snapshot.name == run.snapshot and snapshot.studies == 1
    assert "backup-started" in office.actions()
    assert "the web page" in page(admin, "/admin/backup/")


def test_back_up_now_while_one_runs_starts_nothing(office: Office) -> None:
    admin = office.client("admin1")

    with TargetLock(office.target):
        response = post(admin, "/admin/backup/now", follow_redirects=True)

    assert "already running" in response.get_data(as_text=True)
    assert recent_runs(office.data_dir / "app.db") == []
    assert "backup-started" not in office.actions()


def test_back_up_now_with_backups_off_says_so(tmp_path: Path, seed: Path) -> None:
    office = make_office(tmp_path, seed, backups_on=False)
    admin = office.client("admin1")

    response = post(admin, "/admin/backup/now", follow_redirects=True)

    html = response.get_data(as_text=True)
    assert "Backups are off" in html
    assert "backup-started" not in office.actions()


# Who may see what.


@pytest.mark.parametrize("name", ["desk", "doc"])
def test_other_roles_may_not_use_the_backup_pages(office: Office, name: str) -> None:
    browser = office.client(name)

    for url in (
        "/admin/backup/",
        "/admin/backup/restore/",
        "/admin/backup/restore/progress",
    ):
        assert browser.get(url).status_code == 403
    assert post(browser, "/admin/backup/now").status_code == 403
    data = {"snapshot": "x", "typed": "RESTORE x"}
    assert post(browser, "/admin/backup/restore/verify", data).status_code == 403
    assert post(browser, "/admin/backup/restore/confirm", data).status_code == 403
    assert office.job.running() is False


# The banner.


@pytest.mark.parametrize("name", ["desk", "doc", "admin1"])
def test_every_role_sees_the_banner_admins_get_a_link(
    office: Office, name: str
) -> None:
    html = page(office.client(name))

    assert 'id="backup-banner"' in html
    assert "No backup has completed yet." in html
    assert ("Open the backup page" in html) is (name == "admin1")


def test_no_banner_after_a_fresh_backup(office: Office) -> None:
    room = space(office.target)
    if nearly_full(room, 0):
        pytest.skip("the test disk itself is nearly full")
    office.back_up()

    assert 'id="backup-banner"' not in page(office.client("desk"))


def test_banner_when_the_last_backup_is_older_than_36_hours(office: Office) -> None:
    office.back_up(now=datetime.now().astimezone() - timedelta(hours=40))

    html = page(office.client("desk"))

    assert "The last complete backup is 40 hours old" in html
    assert "start a backup from the Backups page" in html


def test_banner_when_the_backup_disk_is_missing(tmp_path: Path, seed: Path) -> None:
    office = make_office(tmp_path, seed, target=tmp_path / "unplugged")

    html = page(office.client("doc"))

    assert f"The backup folder {tmp_path / 'unplugged'} is missing" in html
    assert "Plug the backup disk back in" in html


def test_banner_when_the_backup_disk_is_read_only(tmp_path: Path, seed: Path) -> None:
    # A read-only mount as root (root may write whatever the permissions),
    # the permissions otherwise.
    target = tmp_path / "backups"
    if os.geteuid() == 0:
        with tmpfs(target, "1M", read_only=True):
            html = _banner_page(tmp_path, seed, target)
    else:
        target.mkdir()
        target.chmod(0o555)
        try:
            html = _banner_page(tmp_path, seed, target)
        finally:
            target.chmod(0o755)

    assert f"The backup folder {target} is read-only." in html
    assert "have it checked, or replace it" in html


def test_the_backup_page_brings_the_banner_up_to_date(office: Office) -> None:
    if nearly_full(space(office.target), 0):
        pytest.skip("the test disk itself is nearly full")
    desk, admin = office.client("desk"), office.client("admin1")
    assert "No backup has completed yet." in page(desk)

    office.back_up()
    assert "No backup has completed yet." in page(desk)

    assert 'id="backup-banner"' not in page(admin, "/admin/backup/")
    assert 'id="backup-banner"' not in page(desk)


def _banner_page(root: Path, seed: Path, target: Path) -> str:
    office = make_office(root, seed, target=target)
    return page(office.client("desk"))


def test_banner_when_the_next_backup_may_not_fit(office: Office) -> None:
    # Nearly full means less free than three times what the last backup
    # wrote: here a last backup that wrote as much as the whole disk holds.
    result = backup(office.data_dir, office.target)
    shutil.rmtree(office.target / result.snapshot)
    total = space(office.target).total
    record_run(office.data_dir / "app.db", replace(result, copied_bytes=total))

    html = page(office.client("desk"))

    assert "The backup disk is nearly full" in html
    assert "Replace the backup disk with a larger one" in html


def test_banner_when_the_backup_disk_is_small(tmp_path: Path, seed: Path) -> None:
    target = tmp_path / "backups"
    with tmpfs(target, "8M"):
        html = _banner_page(tmp_path, seed, target)

    assert "The backup disk is nearly full" in html


def test_banner_is_worked_out_at_most_once_a_minute(office: Office) -> None:
    office.back_up()
    desk = office.client("desk")
    assert "is missing" not in page(desk)

    office.target.rename(office.target.with_name("unplugged"))
    assert "is missing" not in page(desk)

    office.clock.advance(61)
    assert "is missing" in page(desk)


# The restore wizard.


def verify(office: Office, admin: FlaskClient, name: str) -> None:
    """Press "Verify" on snapshot `name` and wait for the verification."""
    response = post(admin, "/admin/backup/restore/verify", {"snapshot": name})
    assert response.status_code == 302
    office.wizard.wait(WAIT_SECONDS)


def confirm(admin: FlaskClient, name: str, typed: str) -> object:
    """Send the typed confirmation for snapshot `name`."""
    data = {"snapshot": name, "typed": typed}
    return post(admin, "/admin/backup/restore/confirm", data)


def test_the_list_shows_each_snapshot(office: Office) -> None:
    snapshot = office.back_up()

    html = page(office.client("admin1"), "/admin/backup/restore/")

    assert f'data-snapshot="{snapshot.name}"' in html
    assert size(snapshot.bytes) in html and moment(snapshot.finished_at) in html
    assert '<td class="num">1</td>' in html  # one study, one image


def test_verifying_a_good_snapshot_leads_to_the_confirmation(office: Office) -> None:
    snapshot = office.back_up()
    admin = office.client("admin1")

    verify(office, admin, snapshot.name)

    assert office.wizard.status().phase == Phase.VERIFIED
    html = page(admin, "/admin/backup/restore/progress")
    assert f"RESTORE {snapshot.name}" in html
    assert "Studies received since then" in html and "kept aside" in html
    assert "restore-verify-started" in office.actions()


def test_a_damaged_snapshot_is_reported_and_never_restored(office: Office) -> None:
    snapshot = office.back_up()
    flip_byte(next((snapshot.path / "storage").rglob("*.dcm")))
    admin = office.client("admin1")
    before = unchanged_view(office)

    verify(office, admin, snapshot.name)
    response = confirm(admin, snapshot.name, f"RESTORE {snapshot.name}")

    assert office.wizard.status().phase == Phase.DAMAGED
    html = page(admin, "/admin/backup/restore/progress")
    assert "is damaged" in html and "Do not restore it" in html
    assert response.status_code == 302  # type: ignore[attr-defined]
    assert "Verify" in page(admin, "/admin/backup/restore/")
    assert unchanged_view(office) == before
    assert "restore-started" not in office.actions()


def test_a_restore_without_verifying_is_refused(office: Office) -> None:
    snapshot = office.back_up()
    admin = office.client("admin1")
    before = unchanged_view(office)

    response = confirm(admin, snapshot.name, f"RESTORE {snapshot.name}")

    assert response.status_code == 302  # type: ignore[attr-defined]
    assert "only a snapshot that was just verified" in page(
        admin, "/admin/backup/restore/"
    )
    assert office.wizard.status().phase == Phase.IDLE
    assert unchanged_view(office) == before
    assert office.actions()[0] == "restore-refused"


@pytest.mark.parametrize("typed", ["", "RESTORE", "yes", "RESTORE 2000-01-01_000000"])
def test_a_mistyped_confirmation_is_refused(office: Office, typed: str) -> None:
    snapshot = office.back_up()
    admin = office.client("admin1")
    verify(office, admin, snapshot.name)
    before = unchanged_view(office)

    response = confirm(admin, snapshot.name, typed)

    assert response.status_code == 400  # type: ignore[attr-defined]
    assert 'id="mistyped"' in response.get_data(as_text=True)  # type: ignore[attr-defined]
    assert office.wizard.status().phase == Phase.VERIFIED
    assert unchanged_view(office) == before
    assert office.actions()[0] == "restore-refused"


def test_an_unknown_snapshot_is_not_found(office: Office) -> None:
    office.back_up()
    admin = office.client("admin1")

    for name in ("2000-01-01_000000", "../data", str(office.data_dir)):
        data = {"snapshot": name, "typed": f"RESTORE {name}"}
        assert post(admin, "/admin/backup/restore/verify", data).status_code == 404
        assert post(admin, "/admin/backup/restore/confirm", data).status_code == 404
    assert office.wizard.status().phase == Phase.IDLE


def test_a_full_restore_through_the_pages(office: Office, tmp_path: Path) -> None:
    snapshot = office.back_up()
    later = _study_file(tmp_path, BOB, "After the backup")
    store_all(office.data_dir, [later])
    admin = office.client("admin1")

    # Verify, then type the phrase (any spacing and case).
    verify(office, admin, snapshot.name)
    response = confirm(admin, snapshot.name, f"  restore   {snapshot.name} ")
    assert response.status_code == 302  # type: ignore[attr-defined]
    office.wizard.wait(WAIT_SECONDS)

    # The data folder is the snapshot, before anything else touches it.
    status = office.wizard.status()
    assert status.phase == Phase.DONE, status.message
    assert file_hashes(office.data_dir / "storage") == file_hashes(
        snapshot.path / "storage"
    )
    for database in ("app.db", "index.db"):
        assert table_rows(office.data_dir / database) == table_rows(
            snapshot.path / database
        )

    # The replaced folder is kept, with the later study and the audit rows
    # of the requests.
    [aside] = office.kept_aside()
    assert status.moved_aside == aside
    assert len(file_hashes(aside / "storage")) == 2
    assert {"restore-verify-started", "restore-started"} <= set(
        office.actions(aside / "app.db")
    )

    # The session was not in the backup: log in again, see the outcome.
    fresh = office.client("admin1")
    html = page(fresh, "/admin/backup/restore/progress")
    assert f"Backup {snapshot.name} is restored" in html
    assert str(aside) in html


def test_the_progress_page_reloads_itself_while_working(
    office: Office, monkeypatch: pytest.MonkeyPatch
) -> None:
    working = RestoreStatus(Phase.VERIFYING, "2024-05-02_023000", 50, 100)
    monkeypatch.setattr(office.wizard, "status", lambda: working)

    html = page(office.client("admin1"), "/admin/backup/restore/progress")

    assert '<meta http-equiv="refresh" content="2">' in html
    assert "Verifying backup 2024-05-02_023000" in html and "50 %" in html


def test_every_page_waits_while_the_data_folder_is_switched(
    tmp_path: Path, seed: Path
) -> None:
    entered, release = threading.Event(), threading.Event()
    data_dir = tmp_path / "data"

    def slow_switch(staged: Path) -> Path | None:
        # Hold the switch with no data folder at all: a request that opened
        # app.db now would fail.
        away = tmp_path / "away"
        data_dir.rename(away)
        entered.set()
        release.wait(WAIT_SECONDS)
        away.rename(data_dir)
        return swap(staged, data_dir)

    office = make_office(tmp_path, seed, switch=slow_switch)
    snapshot = office.back_up()
    admin, desk = office.client("admin1"), office.client("desk")
    verify(office, admin, snapshot.name)
    confirm(admin, snapshot.name, f"RESTORE {snapshot.name}")
    assert entered.wait(WAIT_SECONDS)

    try:
        for browser, url in ((desk, "/"), (admin, "/admin/backup/"), (admin, "/login")):
            response = browser.get(url)
            assert response.status_code == 503
            html = response.get_data(as_text=True)
            assert "this page reloads by itself" in html
            assert '<meta http-equiv="refresh" content="2">' in html
        assert desk.post("/logout").status_code == 503
        assert admin.get("/healthz").status_code == 200
        assert admin.get("/static/app.css").status_code == 200
        assert not data_dir.exists()
    finally:
        release.set()
        office.wizard.wait(WAIT_SECONDS)

    assert office.wizard.status().phase == Phase.DONE
    assert office.client("desk").get("/").status_code == 200
