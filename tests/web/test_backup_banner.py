"""The banner's advice and its once-a-minute cache; the pages' plain words."""

from __future__ import annotations

import threading
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from appliance.state import open_state
from appliance.web.backup_banner import BannerCache, Notice, notices
from appliance.web.backup_words import age, count_of, moment
from backup.status import summary
from tests.web.office import FakeClock

NOW = datetime(2024, 6, 12, 9, 0).astimezone()


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with closing(open_state(path)):
        pass
    return path


def test_each_warning_gets_its_advice(tmp_path: Path, app_db: Path) -> None:
    found = notices(summary(tmp_path / "unplugged", app_db, now=NOW))

    assert [notice.kind for notice in found] == ["missing", "age"]
    assert "is missing" in found[0].text and "Plug the backup disk" in found[0].advice
    assert found[1].text == "No backup has completed yet."
    assert "start a backup" in found[1].advice


def test_backups_off_is_one_notice(app_db: Path) -> None:
    [notice] = notices(summary(None, app_db, now=NOW))

    assert notice.kind == "off" and "backup_dir" in notice.advice


def test_the_cache_works_out_the_notices_at_most_once_a_minute() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def compute() -> list[Notice]:
        calls.append(1)
        return [Notice("age", f"call {len(calls)}", "")]

    cache = BannerCache(compute, clock)

    assert cache.get()[0].text == "call 1"
    clock.advance(59)
    assert cache.get()[0].text == "call 1"
    clock.advance(2)
    assert cache.get()[0].text == "call 2"
    cache.put([Notice("age", "put", "")])
    assert cache.get()[0].text == "put"
    clock.advance(61)
    assert cache.get()[0].text == "call 3"
    clock.advance(-3600)
    assert cache.get()[0].text == "call 4"


def test_others_get_the_previous_notices_while_one_works_them_out() -> None:
    clock = FakeClock()
    started, release = threading.Event(), threading.Event()
    results = [[Notice("age", "old", "")], [Notice("missing", "new", "")]]

    def compute() -> list[Notice]:
        if len(results) == 1:
            started.set()
            release.wait(30)
        return results.pop(0)

    cache = BannerCache(compute, clock)
    cache.get()
    clock.advance(61)
    slow = threading.Thread(target=cache.get)
    slow.start()
    assert started.wait(30)

    assert cache.get()[0].text == "old"
    release.set()
    slow.join(30)
    assert cache.get()[0].text == "new"


def test_a_failure_keeps_the_previous_notices() -> None:
    clock = FakeClock()
    outcomes: list[object] = [[Notice("age", "kept", "")], OSError("disk gone")]

    def compute() -> list[Notice]:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # type: ignore[return-value]

    cache = BannerCache(compute, clock)
    cache.get()
    clock.advance(61)

    assert cache.get()[0].text == "kept"


@pytest.mark.parametrize(
    ("when", "said"),
    [
        (NOW.replace(hour=2, minute=0), "today 02:00"),
        (NOW - timedelta(days=1), "yesterday 09:00"),
        (NOW + timedelta(days=1), "tomorrow 09:00"),
        (NOW - timedelta(days=3), "Sunday 09:00"),
        (NOW - timedelta(days=30), "2024-05-13 09:00"),
        (None, "never"),
    ],
)
def test_moments_in_plain_words(when: datetime | None, said: str) -> None:
    assert moment(when, NOW) == said


@pytest.mark.parametrize(
    ("delta", "said"),
    [
        (timedelta(seconds=20), "just now"),
        (timedelta(minutes=1), "1 minute ago"),
        (timedelta(minutes=45), "45 minutes ago"),
        (timedelta(hours=26, minutes=10), "26 hours ago"),
        (timedelta(days=5, hours=3), "5 days ago"),
    ],
)
def test_ages_in_plain_words(delta: timedelta, said: str) -> None:
    assert age(delta) == said


def test_counts_with_their_noun() -> None:
    assert count_of(1, "study", "studies") == "1 study"
    assert count_of(3, "study", "studies") == "3 studies"
    assert count_of(None, "study", "studies") == "? studies"
