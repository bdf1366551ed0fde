"""Plain SQL on the session's own DBAPI connection, for the few statements every answer runs.

Building a SQLAlchemy statement per request, or even executing a prebuilt Core one (compile-cache
lookup, execution context, result wrapping), cost more than SQLite took to run it: the answer
path's statements are written once as SQL text, in the caller's transaction, and run through one
DBAPI cursor per session.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

_CURSOR = "crowdpatch.plain_sql.cursor"
"""Key of the session's DBAPI cursor in ``Session.info``."""


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


class PlainStatements:
    """Named SQL statements written with ``:name`` parameters, in the placeholders of one backend.

    A JSON parameter (its JSON text) is written ``CAST(:name AS JSON)``: PostgreSQL needs the cast;
    SQLite stores JSON as that text, where a CAST would apply numeric affinity, so there it is dropped.
    """

    def __init__(self, statements: dict[str, str], postgres: bool):
        if postgres:  # psycopg's placeholders; sqlite3 takes :name as written
            statements = {name: re.sub(r"(?<!:):(\w+)", r"%(\1)s", sql) for name, sql in statements.items()}
        else:
            statements = {name: re.sub(r"CAST\((:\w+) AS JSON\)", r"\1", sql) for name, sql in statements.items()}
        self.sql = statements

    def run(self, session: Session, name: str, **params: Any) -> Any:
        """Execute a statement in the session's transaction; the cursor (read it before the next statement).

        One cursor per session, kept in ``session.info``: asking the session for its connection
        cost a tenth of each statement.
        """
        cursor = cursor_of(session)
        cursor.execute(self.sql[name], params)
        return cursor

    def one(self, session: Session, name: str, **params: Any) -> tuple | None:
        return self.run(session, name, **params).fetchone()


def cursor_of(session: Session) -> Any:
    """The session's DBAPI cursor (on the connection of its current transaction)."""
    cursor = session.info.get(_CURSOR)
    if cursor is None:
        cursor = session.info[_CURSOR] = session.connection().connection.cursor()
    return cursor


@event.listens_for(Session, "after_transaction_end")
def _forget_cursor(session: Session, transaction: SessionTransaction) -> None:
    """A session that commits and goes on may get another pooled connection: its next cursor is made there."""
    if transaction.parent is None:
        session.info.pop(_CURSOR, None)


class PerBackend:
    """The same statements for SQLite and PostgreSQL, each prepared once, picked by the session's backend."""

    def __init__(self, statements: dict[str, str]):
        self.statements = statements
        self._prepared: dict[bool, PlainStatements] = {}

    def on(self, session: Session) -> PlainStatements:
        postgres = is_postgres(session)
        if postgres not in self._prepared:
            self._prepared[postgres] = PlainStatements(self.statements, postgres)
        return self._prepared[postgres]
