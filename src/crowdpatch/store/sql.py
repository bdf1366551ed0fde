"""The statements every answer runs: SQLAlchemy ``text()`` compiled once per backend, run in the session's transaction.

A statement is written once, as SQL with ``:named`` parameters, with the types of its JSON
parameters and of the result columns it returns (:class:`Statement`). SQLAlchemy compiles it for the
session's backend: the placeholders (``:name`` for SQLite, ``%(name)s`` for psycopg), the casts the
backend needs, and the type processing of each parameter and column (JSON encoded and decoded by the
JSON type, booleans by the Boolean type). Rows come back as named tuples: columns are read by name.

What is not done per statement is SQLAlchemy's execution machinery (compiled-cache lookup,
execution context, result metadata): on the answer path it cost more than the database took to run
the statements, so the compiled statement runs on the DBAPI cursor of the session's own connection
(the ORM's, in the same transaction). Statements off the answer path use the session as usual.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, event, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.types import TypeEngine

from crowdpatch.store.db import backend_of
from crowdpatch.store.statements import counted_cursor

_LINK = "crowdpatch.store.sql.link"
"""Key of the session's :class:`_Link` in ``Session.info``."""


class _Link:
    """The DBAPI cursor of a session's transaction, and the name its statements are compiled under."""

    __slots__ = ("cursor", "backend")

    def __init__(self, cursor: Any, backend: str):
        self.cursor = cursor
        self.backend = backend


@dataclass(frozen=True)
class _Compiled:
    sql: str
    encode: tuple[tuple[str, Callable[[Any], Any]], ...]
    """Parameters whose type processes them on the way in (JSON)."""
    row: type | None
    decode: tuple[tuple[int, Callable[[Any], Any]], ...]
    """Result columns (by position) whose type processes them on the way out (JSON text on SQLite)."""

    def bound(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters as the DBAPI takes them (by name), processed by their types."""
        for name, process in self.encode:
            params[name] = process(params[name])
        return params

    def row_of(self, raw: tuple) -> Any:
        if self.decode:
            values = list(raw)
            for index, process in self.decode:
                if values[index] is not None:
                    values[index] = process(values[index])
            raw = tuple(values)
        return tuple.__new__(self.row, raw) if self.row is not None else raw


class Statement:
    """One SQL statement with ``:named`` parameters; ``params`` and ``columns`` give the types that need processing.

    ``columns`` names the result columns, in order, with their types (an untyped column is ``None``):
    :meth:`one` and :meth:`all` return named tuples of them. Backend-specific text (a ``FOR UPDATE``
    that SQLite lacks) is chosen by the caller, with :func:`crowdpatch.store.db.backend_of`.
    """

    def __init__(
        self,
        sql: str,
        *,
        params: dict[str, TypeEngine] | None = None,
        columns: dict[str, TypeEngine | None] | None = None,
    ):
        clause = text(sql)
        if params:
            clause = clause.bindparams(*(bindparam(name, type_=type_) for name, type_ in params.items()))
        self.clause = clause
        self.columns = dict(columns or {})
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        """The statement as SQLAlchemy compiles it for ``dialect``'s backend, with named placeholders."""
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = self._compile(_named(dialect))
        return compiled

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiler = self.clause.compile(dialect=dialect)
        encode = []
        for bind in compiler.binds.values():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                encode.append((bind.key, process))
        decode = []
        for index, type_ in enumerate(self.columns.values()):
            process = type_.dialect_impl(dialect).result_processor(dialect, None) if type_ is not None else None
            if process is not None:
                decode.append((index, process))
        row = namedtuple("Row", list(self.columns)) if self.columns else None  # type: ignore[misc]
        return _Compiled(compiler.string, tuple(encode), row, tuple(decode))

    def run(self, session: Session, **params: Any) -> Any:
        """Execute in the session's transaction; the DBAPI cursor (its ``rowcount``), read before the next statement."""
        return self._execute(session, params)[1]

    def one(self, session: Session, **params: Any) -> Any:
        """The first row as a named tuple, or None."""
        compiled, cursor = self._execute(session, params)
        raw = cursor.fetchone()
        return None if raw is None else compiled.row_of(raw)

    def all(self, session: Session, **params: Any) -> list[Any]:
        compiled, cursor = self._execute(session, params)
        return [compiled.row_of(raw) for raw in cursor.fetchall()]

    def scalar(self, session: Session, **params: Any) -> Any:
        """The first column of the first row, or None (no row)."""
        row = self.one(session, **params)
        return None if row is None else row[0]

    def _execute(self, session: Session, params: dict[str, Any]) -> tuple[_Compiled, Any]:
        link = session.info.get(_LINK) or _link(session)
        compiled = self._compiled.get(link.backend) or self.compiled(session.get_bind().dialect)
        for name, process in compiled.encode:
            params[name] = process(params[name])
        link.cursor.execute(compiled.sql, params)
        return compiled, link.cursor


def _named(dialect: Dialect) -> Dialect:
    """``dialect``, or its twin with named placeholders where it has positional ones (SQLite's ``?``)."""
    if not dialect.positional:
        return dialect
    return type(dialect)(paramstyle="named")


def _link(session: Session) -> _Link:
    """Kept in ``session.info``: asking the session for its connection on every statement cost a tenth of each."""
    connection = session.connection()
    cursor = counted_cursor(connection.engine, connection.connection.cursor())
    link = session.info[_LINK] = _Link(cursor, backend_of(connection))
    return link


@event.listens_for(Session, "after_transaction_end")
def _forget_cursor(session: Session, transaction: SessionTransaction) -> None:
    """A session that commits and goes on may get another pooled connection: its next cursor is made there."""
    if transaction.parent is None:
        session.info.pop(_LINK, None)
