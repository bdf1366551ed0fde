"""Keep-alive connections spread evenly over the processes of ``serve --workers N``.

The kernel gives each new connection to one of the processes' sockets by a hash of its addresses
(``SO_REUSEPORT``, :mod:`.processes`): at random, so a few dozen long-lived keep-alive connections
often split unevenly (for 32 of them, 19/13 or worse about two times in five), and the process that
holds more answers each of its requests later. Under the same load the p99 was 54.7 ms split 16/16 and
87.8 ms split 23/9 (docs/benchmarks.md, "Connections per process").

Each process counts its open connections in its slot of an array the processes share
(:class:`ConnectionShare`). A process holding :data:`SHED_GAP` or more connections than the one with
fewest answers a request, at most one per :data:`SHED_INTERVAL`, with ``Connection: close``: its client
opens a new connection, which the hash places again (on another process N - 1 times in N), so the
counts drift together. HTTP/1.1 clients (browsers, ``crowdpatch simulate``) reconnect on their own;
nothing the request asked for is lost, its response is whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, MutableSequence

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

SHED_GAP = 2
"""Connections more than the process with fewest at which a process asks a client to connect anew."""
SHED_INTERVAL = 0.05
"""Seconds between two such requests of one process: each moves a connection only at random, so the
counts are read again before the next."""


class ConnectionShare:
    """One process's count of open connections beside its peers' (``counts``: one slot per process, shared)."""

    def __init__(self, counts: MutableSequence[int], index: int, clock: Callable[[], float] = time.monotonic):
        self.counts = counts
        self.index = index
        self._clock = clock
        self._last_shed = float("-inf")

    def opened(self) -> None:
        self.counts[self.index] += 1  # only this process writes its slot: no lock

    def closed(self) -> None:
        self.counts[self.index] -= 1

    def should_shed(self) -> bool:
        """Whether the request being read should close its connection once answered (and then notes it did)."""
        others = [count for index, count in enumerate(self.counts) if index != self.index]
        if not others or self.counts[self.index] - min(others) < SHED_GAP:
            return False
        now = self._clock()
        if now - self._last_shed < SHED_INTERVAL:
            return False
        self._last_shed = now
        return True


def balanced_protocol(share: ConnectionShare) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools), counting its connections in ``share`` and closing one after its
    response when ``share`` says this process holds too many."""

    class BalancedHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            share.opened()

        def connection_lost(self, exc: Exception | None) -> None:
            share.closed()
            super().connection_lost(exc)

        def on_headers_complete(self) -> None:
            before = self.cycle
            super().on_headers_complete()
            if self.cycle is not before and share.should_shed():
                self.cycle.keep_alive = False  # uvicorn answers with "Connection: close", then closes

    return BalancedHttpToolsProtocol
