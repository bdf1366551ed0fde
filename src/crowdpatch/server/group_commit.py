"""Group commit: the answers of requests that arrive together share one transaction and its commit.

A SQLite commit costs as much as the rest of an answer (see ``DatabaseDispatcher.run_grouped``), and a
server with many workers receives their answers in bursts. Requests queue here; one writer thread
runs the queue as one transaction, committed once, before any of them is answered, and whatever
arrived meanwhile is the next group. The event loop goes on reading and answering requests while
the writer works or waits for its turn at the database (other server processes on the same file
take turns by a file lock, see ``store.writer_lock``). A request alone is not delayed: its group is
itself.

On PostgreSQL only answers with their next question (``"next": true``) are grouped
(``DatabaseDispatcher.run_grouped`` says how, ``joins_groups`` which), one group at a time per
process as on SQLite: two writers per process made more of their answers meet on the same questions
and images, and answered fewer per second at a higher p99 (docs/benchmarks.md, "Group commit on
PostgreSQL"). Every other call runs in a transaction of its own (:class:`OwnTransactions`).
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.store.db import POSTGRES_TRANSACTIONS_AT_ONCE

T = TypeVar("T")


class GroupCommit:
    """Queue of dispatcher calls, run group after group by one writer thread.

    ``alone``: where the calls that join no group run (PostgreSQL: all but answers with their next question);
    None: every call joins.
    """

    def __init__(self, dispatcher: DatabaseDispatcher, alone: OwnTransactions | None = None):
        self.dispatcher = dispatcher
        self._alone = alone
        self._pending: list[tuple[Callable[[], Any], asyncio.Future]] = []
        self._writing = False
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="crowdpatch-writer")
        self.groups = 0
        """Transactions run so far (with ``calls``: the mean group size, for benchmarks)."""
        self.calls = 0

    async def run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call(*args, **kwargs)`` in a group; its result (or exception) once that group committed."""
        if self._alone is not None and not self.dispatcher.joins_groups(call):
            return await self._alone.run(call, *args, **kwargs)
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._pending.append((functools.partial(call, *args, **kwargs), future))
        if not self._writing:
            self._writing = True
            # A task starts on the next turn of the loop: the requests read in this one join the first group.
            loop.create_task(self._write_groups())
        return await future

    async def _write_groups(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                pending, self._pending = self._pending, []
                self.groups += 1
                self.calls += len(pending)
                calls = [call for call, _ in pending]
                try:
                    outcomes = await loop.run_in_executor(self._writer, self.dispatcher.run_grouped, calls)
                except Exception as exc:  # noqa: BLE001 - the writer itself failed: every caller learns it
                    outcomes = [exc] * len(pending)
                for (_, future), outcome in zip(pending, outcomes):
                    if future.cancelled():  # the client went away; what it sent is stored all the same
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._writing = False


class OwnTransactions:
    """PostgreSQL: each dispatcher call that joins no group in a transaction of its own, on one of a few
    threads (a call holds one connection throughout).

    The event loop hands a call over through the pool's ``queue.SimpleQueue`` (C): the web framework's
    generic thread pool (anyio's) hands calls over through a ``queue.Queue``, whose
    ``threading.Condition`` was a seventh of a serving process's CPU in a profile under load.
    """

    def __init__(self, threads: int = POSTGRES_TRANSACTIONS_AT_ONCE):
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="crowdpatch-db")

    async def run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call(*args, **kwargs)`` on a thread of the pool; its result (or exception)."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, functools.partial(call, *args, **kwargs))
