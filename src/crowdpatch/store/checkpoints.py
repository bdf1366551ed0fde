"""WAL checkpoints of a served SQLite database, on a thread of their own instead of inside a commit.

SQLite copies its write-ahead log back into the database file (a checkpoint, with an fsync) in
whichever commit first finds the log over 1,000 pages. In the server that commit holds the one
writer's lock, so every answer in flight waits for the disk: the checkpoints cost answers per
second and put their fsync into the p99 latency (bench/load.py, docs/benchmarks.md). Served, the
database is checkpointed once a second by this thread instead, ``PASSIVE`` (it never waits for,
nor blocks, the writer); the commit-time checkpoint stays as a backstop at a much larger log
(``BACKSTOP_PAGES``), should this thread fall behind.
Durability is unchanged: a commit is in the log before it is acknowledged either way.

A checkpoint that fails (a full disk, a failing device) is tried again, ``interval`` doubling up to
``MAX_BACKOFF_SECONDS``, for as long as the server runs: a thread that stopped at the first error
would leave the log growing until the disk is full again once space is freed. The log says when
checkpoints fail and when they work again, once each, not once per try.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Callable

from sqlalchemy import Engine, event

from crowdpatch.store.db import backend_of

INTERVAL_SECONDS = 1.0
BACKSTOP_PAGES = 20_000
"""80 MB of log with 4 KiB pages: reached only when the checkpoint thread cannot keep up."""
LOG_SIZE_LIMIT_BYTES = 16 * 2**20
MAX_BACKOFF_SECONDS = 30.0
"""Longest wait between two tries of a failing checkpoint."""

log = logging.getLogger(__name__)


class Checkpointer:
    """Checkpoints one SQLite file every ``interval`` seconds until :meth:`stop`."""

    def __init__(
        self,
        engine: Engine,
        interval: float = INTERVAL_SECONDS,
        connect: Callable[[str], sqlite3.Connection] | None = None,
    ):
        self.path = engine.url.database
        self.interval = interval
        self.checkpoints = 0
        self.errors = 0
        """Checkpoints that failed (each tried again later)."""
        self.failing: str | None = None
        """The last checkpoint's error while they fail; None while they work."""
        self._connect = connect or (lambda path: sqlite3.connect(path, check_same_thread=False))
        """Opens the thread's own connection (again after an error)."""
        self._stop = threading.Event()
        event.listen(engine, "connect", _backstop_only)
        engine.dispose()  # pooled connections were opened with the default; new ones get the backstop
        self._thread = threading.Thread(target=self._run, name="crowdpatch-checkpoints", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        wait = self.interval
        try:
            while not self._stop.wait(wait):
                try:
                    if connection is None:
                        connection = self._connect(self.path)
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except Exception as exc:  # noqa: BLE001 - a background thread that dies stops checkpoints for good
                    if self.failing is None:
                        log.warning("WAL checkpoints of %s fail: %s; trying again", self.path, exc)
                    self.failing = str(exc)
                    self.errors += 1
                    wait = min(2 * wait, MAX_BACKOFF_SECONDS)
                    if connection is not None:  # a fresh connection next time, whatever state this one is in
                        connection.close()
                        connection = None
                    continue
                if self.failing is not None:
                    log.warning("WAL checkpoints of %s work again", self.path)
                    self.failing = None
                self.checkpoints += 1
                wait = self.interval
        finally:
            if connection is not None:
                connection.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _backstop_only(dbapi_connection, _record) -> None:
    dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
    # Under a sustained load the log may grow to the backstop before a quiet moment lets it start over;
    # once it does, the file is cut back to this size instead of keeping its largest.
    dbapi_connection.execute(f"PRAGMA journal_size_limit={LOG_SIZE_LIMIT_BYTES}")


def checkpointer_for(engine: Engine) -> Checkpointer | None:
    """A checkpoint thread for a SQLite file database; None for PostgreSQL (and in-memory SQLite)."""
    if backend_of(engine) != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        return None
    return Checkpointer(engine)
