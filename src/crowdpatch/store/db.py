"""Opening a project's database: engine settings per backend, and migrations to the newest schema."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

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
        # A server process runs its planner transactions on a thread pool; a dozen connections keep it
        # busy (more only wait on the same rows and the GIL), and four processes then stay well inside
        # PostgreSQL's default max_connections (100), shared with everything else on that server.
        engine = create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=4)
    count_statements(engine)
    return engine


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
