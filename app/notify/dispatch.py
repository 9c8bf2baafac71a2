"""Delivery in the API process, off the request threads.

Each app (each worker process) has one Deliverer: a daemon thread that sends the outbox (and the
staff alerts) when woken. A route wakes it after its transaction committed (a background task
that only signals, so it returns at once); the request's thread never talks to the mail server,
and a silent server holds up only this thread, bounded by the SMTP timeouts. Whatever it does
not get to (a crash, a restart) the scheduler's next tick sends: rows are claimed under a lease
(app/notify/service.py).
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from fastapi import BackgroundTasks, FastAPI

from app.notify import service

log = logging.getLogger("wellpanel.notify")

IDLE_EXIT_SECONDS = 30.0  # the thread ends after this long without work; a wake starts it again
_deliverers: weakref.WeakSet[Deliverer] = weakref.WeakSet()


class Deliverer:
    def __init__(self, state: Any) -> None:
        self._state = state
        self._cond = threading.Condition()
        self._requested = self._done = 0  # generations of wake-ups asked for and finished
        self._alerts = False
        self._thread: threading.Thread | None = None
        self._stopping = False
        _deliverers.add(self)

    def wake(self, *, alerts: bool = False) -> None:
        """Ask for a delivery run (returns at once)."""
        with self._cond:
            if self._stopping:
                return
            self._requested += 1
            self._alerts = self._alerts or alerts
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="wellpanel-deliverer",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once every wake-up asked for so far has been served (for shutdown and tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._done >= self._requested, timeout)

    def resume(self) -> None:
        """Accept wake-ups again (an app started again after a shutdown, as tests do)."""
        with self._cond:
            self._stopping = False

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(
                        lambda: self._stopping or self._requested > self._done,
                        IDLE_EXIT_SECONDS) or self._stopping:
                    self._thread = None
                    self._done = self._requested
                    self._cond.notify_all()
                    return
                target, alerts, self._alerts = self._requested, self._alerts, False
            self._run(alerts)
            with self._cond:
                self._done = target
                self._cond.notify_all()

    def _run(self, alerts: bool) -> None:
        state = self._state
        if alerts:
            from app.safety import service as safety

            try:
                safety.deliver_alerts(state.engine, state.settings, state.channel,
                                      now=state.clock())
            except Exception:  # the scheduler's next tick retries
                log.exception("safety alert delivery failed")
        try:
            service.deliver_due(state.engine, state.settings, state.channel, now=state.clock())
        except Exception:  # the scheduler retries whatever is left
            log.exception("background delivery failed")


def deliverer(app: FastAPI) -> Deliverer:
    found = getattr(app.state, "deliverer", None)
    if found is None:
        found = app.state.deliverer = Deliverer(app.state)
    return found


def deliver_soon(app: FastAPI, *, alerts: bool = False) -> None:
    deliverer(app).wake(alerts=alerts)


def deliver_in_background(app: FastAPI, background: BackgroundTasks) -> None:
    """Wake the deliverer once the request's transaction has committed (background tasks run
    after the dependencies' teardown): an async task, so not even a thread-pool hop."""
    background.add_task(_wake, app, False)


async def _wake(app: FastAPI, alerts: bool) -> None:
    deliver_soon(app, alerts=alerts)


def wait_all_idle(timeout: float = 10.0) -> bool:
    """Wait for every deliverer of this process to finish what it was asked (tests read the
    mailbox after this)."""
    return all(d.wait_idle(timeout) for d in list(_deliverers))
