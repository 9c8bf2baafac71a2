"""Running a coroutine from a synchronous test."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any


def run_async(coro: Any) -> Any:
    """asyncio.run in a thread of its own: a test process may already run an event loop in the
    main thread (Playwright's sync API does, when browser tests ran earlier in the worker)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
