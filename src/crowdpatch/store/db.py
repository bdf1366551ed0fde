"""Opening a project's database: engine settings per backend, and migrations to the newest schema."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from crowdpatch.store.liveness import guard_pooled_connections
from crowdpatch.store.statements import count_statements

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


ENV_SQLITE_SYNC = "CROWDPATCH_SQLITE_SYNC"
"""PRAGMA synchronous for SQLite: NORMAL (default), FULL, or OFF (benchmarks: the cost of durability)."""


def sqlite_synchronous() -> str:
    value = os.environ.get(ENV_SQLITE_SYNC, "NORMAL").upper()
    if value not in ("FULL", "NORMAL", "OFF"):
        raise ValueError(f"{ENV_SQLITE_SYNC} must be FULL, NORMAL or OFF, not {value!r}")
    return value


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers (a dashboard, `crowdpatch masks`) run while answers are written; NORMAL sync
    # keeps every commit durable against a process crash (not against power loss) at a fraction of
    # FULL's cost; the busy timeout makes a second process wait instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={sqlite_synchronous()}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _postgres_settings(dbapi_connection, _record) -> None:
    # No JIT compilation: PostgreSQL compiles a query whose estimated cost passes jit_above_cost, and a
    # study's estimates pass it easily (the counter check at start, four subqueries per open question,
    # is estimated at half a million). Compiling costs about 0.3 s a query; the answer path's queries
    # take milliseconds, and the study-wide reads (progress, dashboard, aggregation) ran no faster with
    # it (docs/benchmarks.md, "Growth with the study's size"). Committed: a SET is undone with its transaction.
    dbapi_connection.execute("SET jit = off")
    dbapi_connection.commit()


_LONG_NUMBER = re.compile(rb"\d{19}")
"""Nineteen digits in a row: maybe an integer past 64 bits, which orjson reads as a float (losing digits)."""


def _json_loads(data: bytes) -> Any:
    """JSON from PostgreSQL, parsed by orjson: every answer reads its question, its worker and the worker's
    held leases as JSON, and the standard library's parser was an eighth of the answer path's CPU in a
    profile (docs/benchmarks.md, "A transaction without an ORM session, JSON parsed by orjson").

    What orjson would read differently goes to the standard library: a number of 19 digits or more (orjson
    turns integers past 64 bits into floats; a worker's attributes are the platform's JSON) and whatever
    it refuses (a lone surrogate escape, which PostgreSQL's json type keeps).
    """
    import orjson  # with psycopg, in the postgres extra

    if _LONG_NUMBER.search(data) is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def _rollback_keeping_prepared_statements(dbapi_connection) -> None:
    # psycopg discards every statement it prepared on the connection at each rollback() (DEALLOCATE ALL:
    # a rolled-back transaction may have created what they name), and every read-only session ends
    # with one. The next answers on that connection then parse and plan each statement anew, five
    # times before it is prepared again. Nothing here changes the schema in a rolled-back transaction
    # (migrations run before serving), so the rollback is sent below psycopg's bookkeeping.
    from psycopg.pq import ExecStatus, TransactionStatus  # an optional dependency: PostgreSQL only

    pgconn = dbapi_connection.pgconn
    if pgconn.transaction_status not in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        dbapi_connection.rollback()  # nothing to roll back, or a broken connection: psycopg reports it
        return
    result = pgconn.exec_(b"ROLLBACK")
    if result.status != ExecStatus.COMMAND_OK:
        dbapi_connection.rollback()


Backend = Literal["sqlite", "postgresql"]


def backend_of(bind: Engine | Connection | Session | sessionmaker[Session]) -> Backend:
    """Which database a project runs on: every backend-specific choice asks here."""
    if isinstance(bind, sessionmaker):
        bind = bind.kw["bind"]
    if isinstance(bind, Session):
        bind = bind.get_bind()
    name = bind.dialect.name
    if name not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database {name!r}: crowdpatch runs on SQLite or PostgreSQL")
    return name  # type: ignore[return-value]


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy's bare default is psycopg2, which we do not ship)."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    """An engine with the backend's settings; its statements counted when the load benchmark asks
    (:mod:`crowdpatch.store.statements`)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        # Every connection opened stays open (no overflow to close on return), and the pool hands out the
        # one returned last (LIFO): the few the answer loop uses stay warm, the rest wait idle.
        engine = create_engine(
            url, pool_size=POSTGRES_CONNECTIONS, max_overflow=0, pool_use_lifo=True, json_deserializer=_json_loads
        )
        event.listen(engine, "connect", _postgres_settings)
        guard_pooled_connections(engine)
        engine.dialect.do_rollback = _rollback_keeping_prepared_statements
    count_statements(engine)
    return engine


POSTGRES_TRANSACTIONS_AT_ONCE = 4
"""Transactions a process runs at once on PostgreSQL beside its group of answers (a thread and a connection
each): next-question requests, answers sent without asking for the next question, and every other call
that joins no group of answers (``server/group_commit.py``).

Running more at once does not answer faster: they wait on the same rows and pages, PostgreSQL spends
more CPU per answer, and the slowest answers wait longer (docs/benchmarks.md, "Transactions at once
per process"). A study that needs more throughput adds server processes.
"""
POSTGRES_CONNECTIONS = 12
"""The most connections a process opens: its answer loop's, and the other requests' (pages, pictures,
the dashboard) beside them. Four processes stay well inside PostgreSQL's default max_connections (100),
shared with everything else on that server.

A connection, once opened, stays open until the process ends or the database closes it: each new
one costs PostgreSQL a process of its own, its caches filled anew and every statement planned and
prepared again. A pool that closed the connections it opened past its usual few, as soon as they
came back, opened and closed one or two a second under load, the image lookups of new questions
beside the answer loop's (docs/benchmarks.md, "Connections kept open").
"""


def refresh_planner_statistics(engine: Engine) -> None:
    """PostgreSQL: sample every table anew (``ANALYZE``), so the first queries are planned on the study as it is.

    A study's tables grow from nothing to thousands of questions at ``propose``, and PostgreSQL's
    automatic analysis catches up only a minute or more later. Until then the planner believes a
    table of a few rows, and reads a worker's held questions by scanning every question (a cost that
    grows with the study) instead of looking up the few it holds. The server refreshes them as
    it starts; SQLite plans without statistics and is left as it is. Only the tables of the project's
    schema are sampled (a bare ``ANALYZE`` would sample every schema of a shared database).
    """
    if backend_of(engine) != "postgresql":
        return
    with engine.begin() as connection:
        tables = connection.exec_driver_sql("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        names = [connection.dialect.identifier_preparer.quote(name) for (name,) in tables]
        if names:
            connection.exec_driver_sql("ANALYZE " + ", ".join(names))


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser interpolates '%'

    return config


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest schema (creates it when empty).

    On SQLite, foreign keys are not enforced while migrations run: a migration that changes a table's
    constraints rebuilds it (copy, drop, rename), and dropping a table other rows refer to fails while
    they are. This is SQLite's own procedure for schema changes; the setting can only change outside a
    transaction, and comes back on before the connection is used again.
    """
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as connection:
        sqlite = backend_of(connection) == "sqlite"
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def open_database(url: str) -> tuple[Engine, sessionmaker[Session]]:
    engine = make_engine(url)
    upgrade(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)
