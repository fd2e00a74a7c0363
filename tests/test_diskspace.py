"""Free disk space, daily intake from storage/YYYY/MM/DD, and the warning."""

from __future__ import annotations

import logging
import os
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from appliance import diskspace
from tests.conftest import make_appliance

TODAY = date(2025, 3, 10)


def receive(storage: Path, day: date, size: int, name: str = "x.dcm") -> None:
    """Put a file of `size` bytes where a receipt on `day` would go."""
    folder = storage / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / "SENDER"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"\0" * size)


def test_averages_the_last_days_including_today(tmp_path: Path) -> None:
    for offset in range(30):
        receive(tmp_path, TODAY - timedelta(days=offset), 1000)
    receive(tmp_path, TODAY, 400, "second.dcm")

    assert (
        diskspace.daily_intake(tmp_path, days=14, today=TODAY) == (14 * 1000 + 400) / 14
    )


def test_a_young_archive_is_averaged_over_its_own_days(tmp_path: Path) -> None:
    receive(tmp_path, TODAY - timedelta(days=1), 3000)
    receive(tmp_path, TODAY, 1000)

    assert diskspace.daily_intake(tmp_path, days=14, today=TODAY) == 2000


def test_quiet_days_count_as_nothing_received(tmp_path: Path) -> None:
    receive(tmp_path, TODAY - timedelta(days=40), 5000)
    receive(tmp_path, TODAY - timedelta(days=3), 1400)

    assert diskspace.daily_intake(tmp_path, days=14, today=TODAY) == 100


def test_month_and_year_boundaries(tmp_path: Path) -> None:
    new_year = date(2025, 1, 1)
    receive(tmp_path, date(2024, 12, 31), 100)
    receive(tmp_path, new_year, 300)

    assert diskspace.daily_intake(tmp_path, days=2, today=new_year) == 200


def test_an_empty_or_missing_storage_has_no_intake(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("not a day")

    assert diskspace.daily_intake(tmp_path / "empty", today=TODAY) == 0
    assert diskspace.daily_intake(tmp_path / "missing", today=TODAY) == 0


def test_estimate_divides_free_space_by_the_intake(tmp_path: Path) -> None:
    receive(tmp_path / "storage", date.today(), 1_000_000)

    found = diskspace.estimate(tmp_path)

    # Other processes write to this disk too: the two readings may differ.
    assert found.free_bytes > 0
    assert found.free_bytes == pytest.approx(diskspace.free_bytes(tmp_path), rel=0.05)
    assert found.total_bytes >= found.free_bytes
    assert found.daily_bytes == 1_000_000
    assert found.days_left == pytest.approx(found.free_bytes / 1_000_000)


def test_nothing_received_means_no_estimate(tmp_path: Path) -> None:
    assert diskspace.estimate(tmp_path).days_left is None


def test_free_bytes_leave_out_the_root_reserve(tmp_path: Path) -> None:
    stats = os.statvfs(tmp_path)

    assert diskspace.free_bytes(tmp_path) == stats.f_bavail * stats.f_frsize


def test_warns_when_the_disk_fills_within_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    receive(tmp_path / "storage", date.today(), 2_000_000)
    monkeypatch.setattr(diskspace, "free_bytes", lambda _path: 20_000_000)

    with caplog.at_level(logging.WARNING, logger="appliance.diskspace"):
        low = diskspace.warn_if_low(tmp_path, warn_days=30)
        caplog_after_low = caplog.text
        caplog.clear()
        plenty = diskspace.warn_if_low(tmp_path, warn_days=5)
        never = diskspace.warn_if_low(tmp_path, warn_days=0)

    assert low is not None and low.days_left == 10
    assert "Disk space low" in caplog_after_low and "about 10 day(s) left" in (
        caplog_after_low
    )
    assert plenty is not None and never is not None
    assert caplog.text == ""


def test_an_unreadable_folder_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert diskspace.warn_if_low(tmp_path / "missing", warn_days=30) is None
    assert "Could not estimate the free disk space" in caplog.text


@pytest.mark.e2e
def test_the_service_warns_at_start(tmp_path: Path) -> None:
    # A sparse file makes today's intake a terabyte: the disk "fills" today.
    data = tmp_path / "data"
    day = date.today()
    folder = data / "storage" / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / "BIG"
    folder.mkdir(parents=True)
    with (folder / "foreign.bin").open("wb") as handle:
        handle.truncate(10**12)
    appliance = make_appliance(data, {"APPLIANCE_DISK_WARN_DAYS": "30"})

    appliance.start()
    try:
        deadline = time.monotonic() + 20
        while "Disk space low" not in appliance.log():
            assert time.monotonic() < deadline, appliance.log()
            time.sleep(0.2)
    finally:
        appliance.stop()
