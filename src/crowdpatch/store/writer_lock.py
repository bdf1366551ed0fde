"""One writer at a time on a SQLite database, across the threads and processes of the server.

SQLite serializes writers itself, but a waiting writer polls (its busy handler sleeps 1 to 100 ms
between tries) and a transaction that reads before it writes may act on a snapshot another process
has since changed. The server's planner therefore takes this lock, then opens its transaction with
``BEGIN IMMEDIATE`` (the reads inside see the newest data): the threads of one process queue on a
``threading.Lock``, the processes on an exclusive ``flock`` of a file beside the database, which
wakes the next writer the moment the lock is released. Any number of ``crowdpatch serve``
processes may then share one SQLite file; other writers (the CLI) still meet SQLite's own lock.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType


class WriterLock:
    """Re-entrant it is not: one ``with`` per transaction."""

    def __init__(self, database: str | None):
        self._thread_lock = threading.Lock()
        self.path = Path(f"{database}.writer-lock") if database and database != ":memory:" else None
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int:
        # Opened per process (a forked server process must not share its parent's open file: flock
        # locks belong to the open file, so parent and child would hold the "same" lock).
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        if self.path is not None:
            try:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
            except BaseException:
                self._thread_lock.release()
                raise

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if self.path is not None:
                fcntl.flock(self._file(), fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()
