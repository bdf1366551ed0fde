"""Running a coroutine from a test whose thread may already run an event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def run_in_fresh_loop(make_coroutine: Callable[[], Any]) -> Any:
    """``asyncio.run`` in a thread of its own: the browser tests' Playwright keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()
