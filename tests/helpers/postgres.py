"""The test PostgreSQL: whether it is reachable, and a fresh schema on it (tests needing it skip without one)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text

from crowdpatch.store.db import make_engine

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_reachable() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'crowdpatch[postgres]')"
    try:
        psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=2").close()
    except Exception as exc:  # noqa: BLE001 - any failure means: no server to test against
        return f"no PostgreSQL at {POSTGRES} ({type(exc).__name__})"
    return None


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A URL to an empty schema of the test PostgreSQL, dropped afterwards (the test is skipped without a server)."""
    reason = postgres_reachable()
    if reason:
        pytest.skip(reason)
    schema = f"cp_{uuid.uuid4().hex[:10]}"
    admin = make_engine(POSTGRES)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
