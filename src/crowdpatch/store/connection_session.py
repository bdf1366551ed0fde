"""A transaction on one pooled connection that stands in for an ORM session until ORM work is asked of it.

The answer path on PostgreSQL runs its statements on the DBAPI cursor (:mod:`crowdpatch.store.sql`);
most answers never load or add an ORM object. An ORM :class:`~sqlalchemy.orm.Session` per
transaction still cost its setup, its transaction bookkeeping, its events and its commit on every
answer: about a tenth of a serving process's CPU (docs/benchmarks.md, "A transaction without an ORM
session"). :func:`connection_transaction` begins the transaction on a Core connection and hands out a
:class:`ConnectionSession`, which answers what the statements ask of a session (its ``info``, its
connection, its bind) and makes the real session, bound to the same connection and transaction, the
first time anything else is asked of it (``get``, ``add``, ``execute``...). Its pending changes are
flushed before the commit, as the session's own commit would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker


class ConnectionSession:
    """What runs in :func:`connection_transaction`: a session's face over one connection's transaction."""

    def __init__(self, connection: Connection, sessions: sessionmaker[Session]):
        self._connection = connection
        self._sessions = sessions
        self._orm: Session | None = None
        self.info: dict[str, Any] = {}
        """Per transaction, as ``Session.info`` is to the statements (they keep their cursor here)."""
        self.dialect = connection.dialect

    def connection(self) -> Connection:
        return self._connection

    def get_bind(self) -> Connection:
        return self._connection

    @property
    def new(self) -> Any:
        return () if self._orm is None else self._orm.new

    @property
    def dirty(self) -> Any:
        return () if self._orm is None else self._orm.dirty

    @property
    def deleted(self) -> Any:
        return () if self._orm is None else self._orm.deleted

    @property
    def identity_map(self) -> Any:
        """The rows the ORM session has loaded: none before it is made (a closing keeps loaded rows in step)."""
        return {} if self._orm is None else self._orm.identity_map

    @property
    def orm(self) -> Session | None:
        """The ORM session, once something asked for it."""
        return self._orm

    def __getattr__(self, name: str) -> Any:
        # Anything else is the ORM session's, made on first use in the same connection and transaction.
        if self._orm is None:
            self._orm = self._sessions(bind=self._connection)
        return getattr(self._orm, name)


@contextmanager
def connection_transaction(sessions: sessionmaker[Session]) -> Iterator[ConnectionSession]:
    """One transaction on a pooled connection of ``sessions``' engine, committed when the block ends
    (rolled back when it raises); the ORM session, if one was made, is flushed before the commit."""
    engine = sessions.kw["bind"]
    with engine.begin() as connection:
        session = ConnectionSession(connection, sessions)
        try:
            yield session
            if session.orm is not None:
                session.orm.flush()
        finally:
            if session.orm is not None:
                session.orm.close()
