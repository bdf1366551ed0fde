"""Finding a pooled PostgreSQL connection dead before a transaction uses it, without a round trip.

A connection dies when PostgreSQL restarts, fails over, or an administrator ends its backend. The
pool's usual guard (SQLAlchemy's ``pool_pre_ping``) sends a statement at every checkout and waits
for its answer: one round trip of the seven an answer costs on the answer loop, with the CPU and
context switches of both ends. A backend that ends on purpose, though, says so: it sends its error
("terminating connection...") and closes its socket, so an idle connection with something to read is
a dead one, and one ``poll()`` with no timeout sees it. An idle connection has nothing else to
read: crowdpatch neither listens for notifications nor changes settings that PostgreSQL reports back
while a connection sits in the pool.

A peer that vanished without closing its end (a machine powered off, a network partition) leaves
nothing to read, so a connection idle for :data:`PING_AFTER_IDLE_SECONDS` is still pinged the usual
way before use: the connections most likely to have died silently are the long-idle ones (firewalls
drop quiet connections), and under load none sits idle that long.
"""

from __future__ import annotations

import select
import time
from typing import Any

from sqlalchemy import Engine, event, exc

PING_AFTER_IDLE_SECONDS = 30.0
"""A connection idle this long in the pool is pinged (one round trip) before use."""

_RETURNED_AT = "crowdpatch_returned_at"


def guard_pooled_connections(engine: Engine) -> None:
    """Check each PostgreSQL connection as the pool hands it out; a dead one is replaced by a fresh one."""
    dialect = engine.dialect

    def check_alive(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # Raising DisconnectionError makes the pool close this connection and hand out a fresh one.
        if not _idle_and_open(dbapi_connection):
            raise exc.DisconnectionError("the database closed this connection")
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is not None and time.monotonic() - returned_at >= PING_AFTER_IDLE_SECONDS:
            try:
                dialect.do_ping(dbapi_connection)
            except Exception as error:  # noqa: BLE001 - any failure means the connection is not usable
                raise exc.DisconnectionError(f"the database did not answer a ping: {error}") from error

    event.listen(engine, "checkin", _note_return)
    event.listen(engine, "checkout", check_alive)


def _note_return(_dbapi_connection: Any, record: Any) -> None:
    record.info[_RETURNED_AT] = time.monotonic()


def _idle_and_open(dbapi_connection: Any) -> bool:
    """Whether a pooled psycopg connection is open, in no transaction, with nothing waiting to be read."""
    from psycopg.pq import ConnStatus, TransactionStatus  # an optional dependency: PostgreSQL only

    pgconn = dbapi_connection.pgconn
    if pgconn.status != ConnStatus.OK or pgconn.transaction_status != TransactionStatus.IDLE:
        return False
    # poll(), not select(): a busy server's sockets may be numbered past select()'s limit (1024).
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    return not poller.poll(0)  # readable, hung up or in error: all mean the backend is gone
