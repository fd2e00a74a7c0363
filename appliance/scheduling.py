"""Jobs the serving process runs on its own, at set times (APScheduler).

The :class:`~appliance.service.Appliance` creates one scheduler, adds its
jobs, starts it after the listener and shuts it down first when stopping.
Other parts add their jobs the same way (the backup engine will).

Every job is coalesced (runs missed while busy run once, not once per missed
slot) and never runs twice at once. Jobs live in memory only: a run that
falls while the appliance is off is skipped, not made up at the next start.
Times are the machine's local time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

logger = logging.getLogger(__name__)

MISFIRE_GRACE_SECONDS = 6 * 3600


def create_scheduler() -> BackgroundScheduler:
    """Return a stopped scheduler with the appliance's job defaults."""
    # APScheduler logs every run of every job at INFO; a job that runs each
    # second would flood the journal. Its warnings and errors still show.
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    return BackgroundScheduler(
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": MISFIRE_GRACE_SECONDS,
        },
        daemon=True,
    )


def add_weekly(
    scheduler: BackgroundScheduler,
    job_id: str,
    func: Callable[[], Any],
    *,
    day_of_week: str = "sun",
    hour: int = 3,
    minute: int = 0,
) -> Job:
    """Run `func` once a week, e.g. on Sundays at 03:00 local time.

    Parameters
    ----------
    scheduler : BackgroundScheduler
        From :func:`create_scheduler`.
    job_id : str
        Names the job in logs; adding the same id again replaces it.
    func : callable
        Runs on the scheduler's thread pool; it should log its own failures.
    day_of_week, hour, minute
        As APScheduler's ``CronTrigger`` takes them.

    Returns
    -------
    apscheduler.job.Job
    """
    trigger = CronTrigger(day_of_week=day_of_week, hour=hour, minute=minute)
    return scheduler.add_job(
        func, trigger, id=job_id, name=job_id, replace_existing=True
    )


def add_daily(
    scheduler: BackgroundScheduler,
    job_id: str,
    func: Callable[[], Any],
    *,
    hour: int,
    minute: int,
) -> Job:
    """Run `func` once a day at `hour`:`minute` local time (nightly backup)."""
    trigger = CronTrigger(hour=hour, minute=minute)
    return scheduler.add_job(
        func, trigger, id=job_id, name=job_id, replace_existing=True
    )


def add_every(
    scheduler: BackgroundScheduler,
    job_id: str,
    func: Callable[[], Any],
    seconds: float,
) -> Job:
    """Run `func` every `seconds`, starting one interval after the start."""
    trigger = IntervalTrigger(seconds=seconds)
    return scheduler.add_job(
        func, trigger, id=job_id, name=job_id, replace_existing=True
    )


def shutdown(scheduler: BackgroundScheduler) -> None:
    """Stop the scheduler, waiting for jobs that are running to end."""
    if scheduler.running:
        scheduler.shutdown(wait=True)
        logger.info("Scheduler stopped")
