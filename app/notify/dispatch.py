"""Running delivery from the API process (right after a message is queued)."""

from __future__ import annotations

import logging

from fastapi import BackgroundTasks, FastAPI

from app.notify import service

log = logging.getLogger("wellpanel.notify")


def deliver_now(app: FastAPI) -> None:
    try:
        service.deliver_due(app.state.engine, app.state.settings, app.state.channel,
                            now=app.state.clock())
    except Exception:  # the scheduler retries whatever is left; never fail the request
        log.exception("background delivery failed")


def deliver_in_background(app: FastAPI, background: BackgroundTasks) -> None:
    background.add_task(deliver_now, app)
