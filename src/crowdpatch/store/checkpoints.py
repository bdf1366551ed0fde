"""WAL checkpoints of a served SQLite database, on a thread of their own instead of inside a commit.

SQLite copies its write-ahead log back into the database file (a checkpoint, with an fsync) in
whichever commit first finds the log over 1,000 pages. In the server that commit holds the one
writer's lock, so every answer in flight waits for the disk: the checkpoints cost answers per
second and put their fsync into the p99 latency (bench/load.py, docs/benchmarks.md). Served, the
database is checkpointed once a second by this thread instead, ``PASSIVE`` (it never waits for,
nor blocks, the writer); the commit-time checkpoint stays as a backstop at a much larger log
(``BACKSTOP_PAGES``), should this thread fall behind.
Durability is unchanged: a commit is in the log before it is acknowledged either way.

A ``PASSIVE`` checkpoint lets the log start over, but the log's file keeps the largest size it
ever had: under a steady load that is what a second of writes takes (several MB), and on a small
or nearly full disk the log alone fills it. So the thread also looks at the log's file every
``POLL_SECONDS``, and once it is larger than a quarter of the room it could take (the free space
plus the log itself; ``LOG_SIZE_LIMIT_BYTES`` at most), it checkpoints with ``TRUNCATE`` while
holding the writer lock (:mod:`crowdpatch.store.writer_lock`): the answers in flight wait the few
milliseconds it takes, the log goes back into the database file and its file is cut to nothing.
The database file then has the room it needs to take the log back, even on a disk that was full.
A read that holds an old snapshot longer than ``READ_WAIT_SECONDS`` (a long export) makes it give up
and try again later, at doubling intervals, rather than hold the writers up for the whole read.

A checkpoint that fails (a full disk, a failing device) is tried again: a log over its size at
the next look, a periodic one after ``interval`` doubling up to ``MAX_BACKOFF_SECONDS``, for as
long as the server runs: a thread that stopped at the first error would leave the log growing
until the disk is full again once space is freed. The log says when checkpoints fail and when
they work again, once each, not once per try.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from typing import Callable

from sqlalchemy import Engine, event

from crowdpatch.store.db import backend_of
from crowdpatch.store.maintenance import MaintenanceThread
from crowdpatch.store.writer_lock import WriterLock

INTERVAL_SECONDS = 1.0
POLL_SECONDS = 0.05
"""How often the size of the log's file is looked at (a ``stat`` and a ``statvfs``)."""
BACKSTOP_PAGES = 20_000
"""80 MB of log with 4 KiB pages: reached only when the checkpoint thread cannot keep up."""
LOG_SIZE_LIMIT_BYTES = 16 * 2**20
"""The largest the log's file grows before it is truncated, however much room the disk has."""
LOG_SHARE_OF_ROOM = 4
"""The log's file is truncated past 1/4 of the free space plus its own size."""
MAX_BACKOFF_SECONDS = 30.0
"""Longest wait between two tries of a failing periodic checkpoint."""
READ_WAIT_SECONDS = 0.1
"""How long a truncating checkpoint waits for the reads in flight, holding the writer lock, before it gives up."""
MAX_TRUNCATE_BACKOFF_SECONDS = 1.0
"""Longest wait between two truncating checkpoints that found a read in the way (a long report, an export)."""

log = logging.getLogger(__name__)


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still take on the file system holding ``path``."""
    stats = os.statvfs(os.path.dirname(os.path.abspath(path)))
    return stats.f_bavail * stats.f_frsize


class Checkpointer(MaintenanceThread):
    """Checkpoints one SQLite file every ``interval`` seconds, its log truncated when too large, until :meth:`stop`."""

    def __init__(
        self,
        engine: Engine,
        interval: float = INTERVAL_SECONDS,
        connect: Callable[[str], sqlite3.Connection] | None = None,
        free_space: Callable[[str], int] = free_bytes,
    ):
        super().__init__("crowdpatch-checkpoints")
        self.path = engine.url.database
        self.interval = interval
        self.checkpoints = 0
        self.truncations = 0
        """Checkpoints that emptied the log's file because it had grown past :meth:`log_budget`."""
        self.errors = 0
        """Checkpoints that failed (each tried again later)."""
        self.failing: str | None = None
        """The last checkpoint's error while they fail; None while they work."""
        self._connect = connect or (
            lambda path: sqlite3.connect(path, timeout=READ_WAIT_SECONDS, check_same_thread=False)
        )
        """Opens the thread's own connection (again after an error)."""
        self._free_space = free_space
        self._writer = WriterLock(self.path)
        event.listen(engine, "connect", _backstop_only)
        engine.dispose()  # pooled connections were opened with the default; new ones get the backstop
        self._start()

    def log_bytes(self) -> int:
        """The size of the log's file (0 while there is none)."""
        try:
            return os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            return 0

    def log_budget(self, log_bytes: int) -> int:
        """How large the log's file may grow before it is truncated: a share of the room it could take."""
        try:
            room = self._free_space(self.path) + log_bytes
        except OSError:
            return LOG_SIZE_LIMIT_BYTES
        return min(LOG_SIZE_LIMIT_BYTES, room // LOG_SHARE_OF_ROOM)

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        wait = self.interval
        next_periodic = time.monotonic() + wait
        truncate_wait, next_truncate = POLL_SECONDS, 0.0
        try:
            while not self._stop.wait(min(POLL_SECONDS, self.interval)):
                size = self.log_bytes()
                too_large = size > self.log_budget(size) and time.monotonic() >= next_truncate
                if not too_large and time.monotonic() < next_periodic:
                    continue
                try:
                    if connection is None:
                        connection = self._connect(self.path)
                    if too_large:
                        if self._truncate(connection):
                            truncate_wait = POLL_SECONDS
                        else:  # a long read holds an old snapshot: the writers are not held up at every look
                            truncate_wait = min(2 * truncate_wait, MAX_TRUNCATE_BACKOFF_SECONDS)
                            next_truncate = time.monotonic() + truncate_wait
                    else:
                        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except Exception as exc:  # noqa: BLE001 - a background thread that dies stops checkpoints for good
                    if self.failing is None:
                        log.warning("WAL checkpoints of %s fail: %s; trying again", self.path, exc)
                    self.failing = str(exc)
                    self.errors += 1
                    wait = min(2 * wait, MAX_BACKOFF_SECONDS)
                    next_periodic = time.monotonic() + wait
                    if connection is not None:  # a fresh connection next time, whatever state this one is in
                        connection.close()
                        connection = None
                    continue
                if self.failing is not None:
                    log.warning("WAL checkpoints of %s work again", self.path)
                    self.failing = None
                self.checkpoints += 1
                wait = self.interval
                next_periodic = time.monotonic() + wait
        finally:
            if connection is not None:
                connection.close()

    def _truncate(self, connection: sqlite3.Connection) -> bool:
        """Copy the whole log into the database file and empty it, no writer starting; False: a read was in the way.

        Holding the writer lock, the checkpoint waits only for the reads in flight (milliseconds, up
        to ``READ_WAIT_SECONDS``); without it, a writer of every moment would keep the log from ever
        being emptied.
        """
        with self._writer:
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:  # a read outlasted the wait: tried again later, the log still too large
            return False
        self.truncations += 1
        return True


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
