"""The statements every answer runs: SQLAlchemy ``text()`` compiled once per backend, run in the session's transaction.

A statement is written once, as SQL with ``:named`` parameters, with the types of its JSON
parameters and of the result columns it returns (:class:`Statement`). SQLAlchemy compiles it for the
session's backend: the placeholders (``?`` for SQLite, ``%(name)s`` for psycopg), the casts the
backend needs, and the type processing of each parameter and column (JSON encoded and decoded by the
JSON type, booleans by the Boolean type). Rows come back as named tuples: columns are read by name.

What is not done per statement is SQLAlchemy's execution machinery (compiled-cache lookup,
execution context, result metadata): on the answer path it cost more than the database took to run
the statements, so the compiled statement runs on the DBAPI cursor of the session's own connection
(the ORM's, in the same transaction). Statements off the answer path use the session as usual.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, event, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.types import TypeEngine

from crowdpatch.store.db import backend_of

_CURSOR = "crowdpatch.store.sql.cursor"
"""Key of the session's DBAPI cursor in ``Session.info``."""


@dataclass(frozen=True)
class _Compiled:
    sql: str
    order: tuple[str, ...] | None
    """Parameter names in placeholder order, for a positional backend (SQLite); None: by name (psycopg)."""
    encode: tuple[tuple[str, Callable[[Any], Any]], ...]
    """Parameters whose type processes them on the way in (JSON)."""
    row: type | None
    decode: tuple[Callable[[Any], Any] | None, ...] | None
    """Per result column, its type's processing on the way out (JSON text on SQLite); None when no column has any."""

    def bound(self, params: dict[str, Any]) -> dict[str, Any] | tuple[Any, ...]:
        """The parameters as the DBAPI takes them: processed by their types, by name or in placeholder order."""
        for name, process in self.encode:
            params[name] = process(params[name])
        return params if self.order is None else tuple(params[name] for name in self.order)

    def row_of(self, raw: tuple) -> Any:
        if self.decode is not None:
            raw = tuple(
                value if process is None or value is None else process(value)
                for process, value in zip(self.decode, raw, strict=True)
            )
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
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = self._compile(dialect)
        return compiled

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiler = self.clause.compile(dialect=dialect)
        encode = []
        for bind in compiler.binds.values():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                encode.append((bind.key, process))
        decode: tuple[Callable[[Any], Any] | None, ...] | None = tuple(
            type_.dialect_impl(dialect).result_processor(dialect, None) if type_ is not None else None
            for type_ in self.columns.values()
        )
        if not any(decode):
            decode = None
        row = namedtuple("Row", list(self.columns)) if self.columns else None  # type: ignore[misc]
        order = tuple(compiler.positiontup) if compiler.positiontup is not None else None
        return _Compiled(compiler.string, order, tuple(encode), row, decode)

    def run(self, session: Session, **params: Any) -> Any:
        """Execute in the session's transaction; the DBAPI cursor (its ``rowcount``), read before the next statement."""
        return self._execute(session, params)[1]

    def run_many(self, session: Session, rows: Iterable[dict[str, Any]]) -> int:
        """Execute once per parameter set (one DBAPI ``executemany``); the rows it changed."""
        compiled = self.compiled(session.get_bind().dialect)
        batch = [compiled.bound(dict(params)) for params in rows]
        if not batch:
            return 0
        cursor = cursor_of(session)
        cursor.executemany(compiled.sql, batch)
        return cursor.rowcount

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
        compiled = self.compiled(session.get_bind().dialect)
        cursor = cursor_of(session)
        cursor.execute(compiled.sql, compiled.bound(params))
        return compiled, cursor


def cursor_of(session: Session) -> Any:
    """The session's DBAPI cursor, on the connection of its current transaction (one per session and transaction).

    Kept in ``session.info``: asking the session for its connection on every statement cost a tenth of each.
    """
    cursor = session.info.get(_CURSOR)
    if cursor is None:
        cursor = session.info[_CURSOR] = session.connection().connection.cursor()
    return cursor


@event.listens_for(Session, "after_transaction_end")
def _forget_cursor(session: Session, transaction: SessionTransaction) -> None:
    """A session that commits and goes on may get another pooled connection: its next cursor is made there."""
    if transaction.parent is None:
        session.info.pop(_CURSOR, None)


__all__ = ["Statement", "backend_of", "cursor_of"]
