"""The serving process's scheduler and the keeper's jobs on it."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

from appliance import scheduling
from appliance.index import IndexWriter
from appliance.maintenance import IndexKeeper
from appliance.storage import Storage


def test_weekly_job_runs_on_sunday_at_three() -> None:
    scheduler = scheduling.create_scheduler()
    scheduler.start(paused=True)
    try:
        job = scheduling.add_weekly(scheduler, "weekly", lambda: None)
        when = job.next_run_time
    finally:
        scheduling.shutdown(scheduler)

    assert when.weekday() == 6 and (when.hour, when.minute) == (3, 0)
    assert when - datetime.now(when.tzinfo) <= timedelta(days=7)


def test_interval_job_runs_and_shutdown_stops_it() -> None:
    ran = threading.Event()
    scheduler = scheduling.create_scheduler()
    scheduling.add_every(scheduler, "tick", ran.set, seconds=0.1)

    scheduler.start()
    assert ran.wait(timeout=5)
    scheduling.shutdown(scheduler)

    assert not scheduler.running


def test_the_keeper_adds_its_weekly_check(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    storage = Storage(data_dir)
    storage.prepare()
    writer = IndexWriter(data_dir / "index.db")
    keeper = IndexKeeper(data_dir, writer.path, data_dir / "app.db", storage, writer)
    scheduler = scheduling.create_scheduler()
    keeper.prepare()
    writer.start()

    keeper.start(scheduler)
    jobs = {job.id for job in scheduler.get_jobs()}
    keeper.stop()
    writer.stop()
    keeper.unlock()

    assert jobs == {"weekly-check", "rebuild-requests"}
