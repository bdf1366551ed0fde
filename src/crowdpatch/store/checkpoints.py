"""WAL checkpoints of a served SQLite database, on a thread of their own instead of inside a commit.

SQLite copies its write-ahead log back into the database file (a checkpoint, with an fsync) in
whichever commit first finds the log over 1,000 pages. In the server that commit holds the one
writer's lock, so every answer in flight waits for the disk: the checkpoints cost answers per
second and put their fsync into the p99 latency (bench/load.py, docs/benchmarks.md). Served, the
database is checkpointed once a second by this thread instead, ``PASSIVE`` (it never waits for,
nor blocks, the writer); the commit-time checkpoint stays as a backstop at a much larger log
(``BACKSTOP_PAGES``), should this thread fall behind.
Durability is unchanged: a commit is in the log before it is acknowledged either way.
"""

from __future__ import annotations

import sqlite3
import threading

from sqlalchemy import Engine, event

from crowdpatch.store.db import backend_of

INTERVAL_SECONDS = 1.0
BACKSTOP_PAGES = 20_000
"""80 MB of log with 4 KiB pages: reached only when the checkpoint thread cannot keep up."""
LOG_SIZE_LIMIT_BYTES = 16 * 2**20


class Checkpointer:
    """Checkpoints one SQLite file every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, engine: Engine, interval: float = INTERVAL_SECONDS):
        self.path = engine.url.database
        self.interval = interval
        self.checkpoints = 0
        self._stop = threading.Event()
        event.listen(engine, "connect", _backstop_only)
        engine.dispose()  # pooled connections were opened with the default; new ones get the backstop
        self._thread = threading.Thread(target=self._run, name="crowdpatch-checkpoints", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection = sqlite3.connect(self.path, check_same_thread=False)
        try:
            while not self._stop.wait(self.interval):
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
        finally:
            connection.close()

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
