"""Running the dispatcher periodically with APScheduler (its own process, or inside `demo`)."""

from __future__ import annotations

import logging

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import Engine

from app.audit import anchor
from app.config import Settings
from app.db import utcnow
from app.notify.channels import Channel
from app.scheduling.dispatcher import tick

log = logging.getLogger("wellpanel.scheduler")
JOB_ID = "wellpanel-dispatcher"


def _safe_tick(engine: Engine, settings: Settings, channel: Channel) -> None:
    now = utcnow()
    try:
        tick(engine, settings, channel, now=now)
    except Exception:  # the next tick retries; never let the scheduler thread die
        log.exception("dispatcher tick failed")
    # The ledger's head is anchored every M minutes even when no request comes to do it.
    anchor.maybe_checkpoint(engine, now=now)


def add_dispatcher_job(scheduler: BlockingScheduler | BackgroundScheduler, engine: Engine,
                       settings: Settings, channel: Channel, seconds: int) -> None:
    if anchor.anchor_for(engine) is None:
        anchor.attach(engine, settings)
    # One job, UTC, coalescing missed runs into one, never two ticks of this process at once.
    scheduler.add_job(_safe_tick, "interval", seconds=seconds, id=JOB_ID,
                      args=(engine, settings, channel), coalesce=True, max_instances=1,
                      next_run_time=utcnow(), replace_existing=True)


def run_forever(engine: Engine, settings: Settings, channel: Channel, seconds: int) -> None:
    scheduler = BlockingScheduler(timezone="UTC")
    add_dispatcher_job(scheduler, engine, settings, channel, seconds)
    log.info("scheduler started", extra={"interval_seconds": seconds})
    scheduler.start()


def start_in_background(engine: Engine, settings: Settings, channel: Channel,
                        seconds: int) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(timezone="UTC")
    add_dispatcher_job(scheduler, engine, settings, channel, seconds)
    scheduler.start()
    return scheduler
