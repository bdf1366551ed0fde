"""Counting the SQL statements a process runs, for the load benchmark: how many round trips an answer costs.

Off unless ``CROWDPATCH_STATEMENT_COUNTS`` names a folder. Then every engine :func:`make_engine` opens
counts each statement it sends into ``<folder>/<pid>.count``, an 8-byte counter mapped into memory,
so that counting costs no system call and another process (the benchmark) reads every serving
process's count at any time with :func:`read_statement_counts`. Two ways in: SQLAlchemy's
``before_cursor_execute`` event (an ``executemany`` is one statement), and :func:`counted_cursor` for
the answer path's statements, which run on the DBAPI cursor itself (:mod:`crowdpatch.store.sql`)
where SQLAlchemy's events do not see them. SQLite's periodic WAL checkpoint, on a connection of its
own (:mod:`crowdpatch.store.checkpoints`), is not counted.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

ENV_STATEMENT_COUNTS = "CROWDPATCH_STATEMENT_COUNTS"
"""A folder to count SQL statements into (one file per process); unset: nothing is counted."""

_COUNT = struct.Struct("<Q")


class StatementCounter:
    """The statements this process's engines ran so far, kept in ``<folder>/<pid>.count``.

    One per folder and process: a forked child (a server's worker process) opens its own file on its
    first statement. A lock keeps counts exact when a server's thread pool runs statements at once.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.pid: int | None = None
        self.count = 0
        self.lock = threading.Lock()
        self.mapped: mmap.mmap | None = None

    def _open(self, pid: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{pid}.count"
        path.write_bytes(_COUNT.pack(0))
        with open(path, "r+b") as file:
            self.mapped = mmap.mmap(file.fileno(), _COUNT.size)
        self.pid, self.count = pid, 0

    def __call__(self, *_args: Any) -> None:
        with self.lock:
            pid = os.getpid()
            if pid != self.pid:
                self._open(pid)
            self.count += 1
            _COUNT.pack_into(self.mapped, 0, self.count)


class CountingCursor:
    """A DBAPI cursor that counts the statements it executes; everything else is the cursor's own."""

    __slots__ = ("_cursor", "_counter")

    def __init__(self, cursor: Any, counter: StatementCounter):
        self._cursor = cursor
        self._counter = counter

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self._counter()
        return self._cursor.execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        self._counter()
        return self._cursor.executemany(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


_counters: dict[Path, StatementCounter] = {}
_counted_engines: weakref.WeakKeyDictionary[Engine, StatementCounter] = weakref.WeakKeyDictionary()


def count_statements(engine: Engine) -> None:
    """Count ``engine``'s statements into the folder ``CROWDPATCH_STATEMENT_COUNTS`` names, if it is set."""
    folder = os.environ.get(ENV_STATEMENT_COUNTS)
    if not folder:
        return
    path = Path(folder).resolve()
    counter = _counters.setdefault(path, StatementCounter(path))
    event.listen(engine, "before_cursor_execute", counter)
    _counted_engines[engine] = counter


def counted_cursor(engine: Engine, cursor: Any) -> Any:
    """``cursor`` (a DBAPI cursor of ``engine``'s), counting its statements where ``engine``'s are counted."""
    if not _counted_engines:
        return cursor
    counter = _counted_engines.get(engine)
    return cursor if counter is None else CountingCursor(cursor, counter)


def read_statement_counts(folder: Path) -> int:
    """Statements counted so far into ``folder``, by every process together (0 before any)."""
    if not folder.is_dir():
        return 0
    return sum(_COUNT.unpack(path.read_bytes()[: _COUNT.size])[0] for path in folder.glob("*.count"))
