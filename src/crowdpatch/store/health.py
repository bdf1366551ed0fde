"""Telling a store that cannot write (a full disk, a read-only folder, a failing device) from other errors.

A full disk is a condition of the machine, not of a request: the server answers it with a 503 that
says when to come back, and the command line with one line naming the cause. Both ask here whether
an exception is such a condition, and for the words to say it in.
"""

from __future__ import annotations

import errno
import sqlite3

from sqlalchemy.exc import DBAPIError

SQLITE_CANNOT_WRITE = {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN}
"""SQLite's primary result codes (the low byte of an extended code) that mean its files cannot be written."""
SQLITE_CANNOT_WRITE_WORDS = (
    "database or disk is full",
    "disk i/o error",
    "readonly database",
    "unable to open database file",
)
"""The same, in SQLite's words (an error raised without its code)."""

POSTGRES_CANNOT_WRITE = {
    "53000": "insufficient resources",
    "53100": "disk full",
    "53200": "out of memory",
    "58030": "I/O error",
    "25006": "read-only transaction",
}
"""PostgreSQL SQLSTATEs of a server that cannot write (class 53, an I/O error, a read-only standby)."""

OS_CANNOT_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG}
"""errno values of a file that cannot be written for want of room or of a writable device."""


def cannot_write_reason(exc: BaseException) -> str | None:
    """What keeps the store (or the project folder) from writing, in the system's words; None for any other error."""
    if isinstance(exc, DBAPIError):
        exc = exc.orig if exc.orig is not None else exc
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in SQLITE_CANNOT_WRITE:
            return _first_line(exc)
        words = str(exc).lower()
        return _first_line(exc) if any(w in words for w in SQLITE_CANNOT_WRITE_WORDS) else None
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate in POSTGRES_CANNOT_WRITE:
        return f"{_first_line(exc)} (SQLSTATE {sqlstate}: {POSTGRES_CANNOT_WRITE[sqlstate]})"
    if isinstance(exc, OSError) and exc.errno in OS_CANNOT_WRITE:
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return f"{where}{exc.strerror or exc}"
    return None


def storage_error_message(exc: OSError | DBAPIError) -> str:
    """One line naming the file (or the database) that could not be written or read, and why."""
    if isinstance(exc, DBAPIError):
        # SQLite's own words: 'database or disk is full', 'attempt to write a readonly database', ...
        return f"database: {_first_line(exc.orig if exc.orig is not None else exc)}"
    where = exc.filename if exc.filename is not None else "(unnamed file)"
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        # What mkdir and open report when a file sits where the project keeps a folder.
        return f"{where}: a file is in the way of a folder ({exc.strerror})"
    return f"{where}: {exc.strerror or exc}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
