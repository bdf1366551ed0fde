"""Group commit: the planner calls of requests that arrive together share one SQLite transaction.

A SQLite commit costs as much as the rest of an answer (see ``StorePlanner.run_grouped``), and a
server with many workers receives their answers in bursts: every request the event loop reads in
one turn is queued here, and at the end of that turn all of them run in one transaction, committed
once, before any of them is answered. A request alone is not delayed: its group is itself.
PostgreSQL keeps a transaction per call on the thread pool (row locks; other processes).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable, TypeVar

from crowdpatch.crowd.store_planner import StorePlanner

T = TypeVar("T")


class GroupCommit:
    """Queue of planner calls for the current turn of the event loop, run together at its end."""

    def __init__(self, planner: StorePlanner):
        self.planner = planner
        self._pending: list[tuple[Callable[[], Any], asyncio.Future]] = []
        self.groups = 0
        """Transactions run so far (with ``calls``: the mean group size, for benchmarks)."""
        self.calls = 0

    async def run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call(*args, **kwargs)`` in the next group; its result (or exception) once the group committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._pending.append((functools.partial(call, *args, **kwargs), future))
        if len(self._pending) == 1:
            # Scheduled behind the requests already read in this turn, which join the group first.
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        self.groups += 1
        self.calls += len(pending)
        outcomes = self.planner.run_grouped([call for call, _ in pending])
        for (_, future), outcome in zip(pending, outcomes):
            if future.cancelled():  # the client went away; what it sent is stored all the same
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
