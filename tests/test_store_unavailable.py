"""A store that cannot write: 503 with Retry-After, one log line per change, recovery, nothing acknowledged lost.

The full disk is SQLite's own: ``PRAGMA max_page_count`` caps the database at its current size on
every connection the server checks out, so the first write that needs a new page fails inside
SQLite with "database or disk is full" (SQLITE_FULL), exactly as on a full disk, and lifting the
cap is freeing space. No root, no mount, and the same failure on every run.
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import time

import psycopg.errors
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError, OperationalError

from crowdpatch.server.app import create_app
from crowdpatch.store.checkpoints import Checkpointer
from crowdpatch.store.db import make_engine
from crowdpatch.store.health import cannot_write_reason
from crowdpatch.store.models import AnswerRow
from helpers.sessions import open_session

CANNOT_WRITE = "store cannot write"
WRITES_AGAIN = "store writes again"


def quiet(config) -> None:
    config.crowd.gold_rate = 0.0  # answers are "yes" to everything: no worker may be stopped for it
    config.patches.presentation = "single"  # yes/no windows, many small questions


class PageCap:
    """``PRAGMA max_page_count`` on every connection the engine hands out; ``None``: no cap (SQLite's default)."""

    def __init__(self, engine) -> None:
        self.pages: int | None = None
        event.listen(engine, "checkout", self._apply)

    def _apply(self, dbapi_connection, _record, _proxy) -> None:
        pages = self.pages if self.pages is not None else 1_073_741_823
        dbapi_connection.execute(f"PRAGMA max_page_count={pages}").fetchall()


def lines(caplog, text: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if text in record.getMessage()]


def stored_client_ids(project) -> set[str]:
    """Read with the sqlite3 module, as an outside observer would."""
    connection = sqlite3.connect(project.directory / "crowdpatch.db")
    try:
        return {client_id for (client_id,) in connection.execute("SELECT client_id FROM answer")}
    finally:
        connection.close()


def test_a_full_store_is_503_with_retry_after_logged_once_each_way_recovers_and_loses_no_acknowledged_answer(
    make_project, caplog
):
    caplog.set_level(logging.WARNING, logger="crowdpatch")
    project = make_project(n_images=12, size=64, configure=quiet)
    cap = PageCap(project.engine)
    acknowledged: set[str] = set()
    with TestClient(create_app(project)) as client:
        key = {"X-API-Key": project.config.server.effective_api_key()}
        tokens = []
        for i in range(3):
            opened = client.post(
                f"/api/v1/projects/{project.config.name}/sessions",
                json={"platform": "simulated", "worker_id": f"w{i}"},
                headers=key,
            )
            assert opened.status_code == 201, opened.text
            tokens.append({"Authorization": f"Bearer {opened.json()['token']}"})

        def answer(worker: int, number: int):
            """Lease a question and answer it: the reply that failed, or None once acknowledged."""
            task = client.get("/api/v1/tasks/next", headers=tokens[worker])
            if task.status_code != 200:
                return task
            body = {
                "task_id": task.json()["task_id"],
                "answer": "yes",
                "client_id": f"w{worker}-{number}",
                "client_ms": 1500,
            }
            posted = client.post("/api/v1/answers", json=body, headers=tokens[worker])
            if posted.status_code in (200, 201):
                acknowledged.add(body["client_id"])
                return None
            return posted

        for number in range(6):
            assert answer(number % 3, number) is None
        with project.engine.connect() as connection:
            cap.pages = connection.exec_driver_sql("PRAGMA page_count").scalar()
        # Answer on until a write needs a page the cap refuses (answers fit in the pages' free room first).
        failed = None
        for number in range(6, 600):
            failed = answer(number % 3, number)
            if failed is not None:
                break
        assert failed is not None and failed.status_code == 503, failed and failed.text
        assert failed.headers["Retry-After"] == "5"
        assert failed.json()["reason"] == "store_unavailable"
        assert "database or disk is full" in failed.json()["detail"]
        assert "Traceback" not in caplog.text

        # A client retries the very request it sent, as told: refused the same way while the disk is full.
        request = failed.request
        for _ in range(5):
            again = client.request(request.method, request.url, content=request.content, headers=request.headers)
            assert again.status_code == 503 and again.headers["Retry-After"] == "5"
        assert len(lines(caplog, CANNOT_WRITE)) == 1, caplog.text
        assert lines(caplog, WRITES_AGAIN) == []

        cap.pages = None  # space is back: nothing to restart
        again = client.request(request.method, request.url, content=request.content, headers=request.headers)
        assert again.status_code in (200, 201), again.text
        if request.url.path.endswith("/answers"):
            acknowledged.add(json.loads(request.content)["client_id"])
        for number in range(600, 612):
            assert answer(number % 3, number) is None
        assert len(lines(caplog, CANNOT_WRITE)) == 1 and len(lines(caplog, WRITES_AGAIN)) == 1, caplog.text
        assert client.app.state.checkpointer.alive
    assert acknowledged and acknowledged <= stored_client_ids(project)


class FailingConnection:
    """A sqlite3 connection whose first ``failures`` statements fail as a full disk does."""

    def __init__(self, connection: sqlite3.Connection, failures: list[int]) -> None:
        self.connection = connection
        self.failures = failures

    def execute(self, statement: str):
        if self.failures[0] > 0:
            self.failures[0] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return self.connection.execute(statement)

    def close(self) -> None:
        self.connection.close()


def test_the_checkpoint_thread_survives_failed_checkpoints_and_says_so_once_each_way(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="crowdpatch")
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x)")
    failures = [3]
    checkpointer = Checkpointer(
        engine, interval=0.01, connect=lambda path: FailingConnection(sqlite3.connect(path), failures)
    )
    try:
        deadline = time.monotonic() + 30
        while checkpointer.checkpoints < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.alive
        assert checkpointer.errors == 3 and checkpointer.checkpoints >= 2 and checkpointer.failing is None
    finally:
        checkpointer.stop()
        engine.dispose()
    assert len(lines(caplog, "fail: database or disk is full")) == 1, caplog.text
    assert len(lines(caplog, "work again")) == 1, caplog.text


def _wrapped(orig: BaseException) -> OperationalError:
    return OperationalError("INSERT ...", {}, orig)


@pytest.mark.parametrize(
    "error, words",
    [
        (_wrapped(sqlite3.OperationalError("database or disk is full")), "database or disk is full"),
        (_wrapped(sqlite3.OperationalError("disk I/O error")), "disk I/O error"),
        (_wrapped(sqlite3.OperationalError("attempt to write a readonly database")), "readonly"),
        (_wrapped(psycopg.errors.DiskFull("could not extend file")), "SQLSTATE 53100"),
        (_wrapped(psycopg.errors.IoError("could not write block")), "SQLSTATE 58030"),
        (OSError(errno.ENOSPC, "No space left on device", "/p/scaled/x.jpg"), "/p/scaled/x.jpg: No space left"),
    ],
)
def test_full_disks_and_failing_devices_are_told_apart_from_other_errors(error, words):
    assert words in (cannot_write_reason(error) or "")


@pytest.mark.parametrize(
    "error",
    [
        _wrapped(sqlite3.OperationalError('near "x": syntax error')),
        IntegrityError("INSERT ...", {}, psycopg.errors.UniqueViolation("duplicate key")),
        OSError(errno.ENOENT, "No such file or directory", "/p/x.jpg"),
        ValueError("database or disk is full"),
    ],
)
def test_other_errors_are_not_a_full_disk(error):
    assert cannot_write_reason(error) is None


def test_a_server_whose_postgresql_connections_were_terminated_answers_on_fresh_ones(make_project, postgres_schema):
    """PostgreSQL ends a server's connections when it restarts or an administrator kills them: the pooled ones
    are found dead before use and replaced, so the next question and answer go through, and none is lost."""
    url = postgres_schema + "&application_name=cp_terminated"

    def configure(config) -> None:
        quiet(config)
        config.db_url = url

    project = make_project(n_images=4, size=64, configure=configure)
    admin = make_engine(postgres_schema)
    with TestClient(create_app(project)) as client:
        auth = open_session(client, project)
        stored = []
        for round_number in range(3):
            task = client.get("/api/v1/tasks/next", headers=auth).json()["task_id"]
            body = {"task_id": task, "answer": "yes", "client_id": f"t{round_number}", "client_ms": 900}
            response = client.post("/api/v1/answers", json=body, headers=auth)
            assert response.status_code == 201, response.text
            stored.append(body["client_id"])
            with admin.begin() as connection:
                killed = connection.exec_driver_sql(
                    # Waiting (up to 5 s) until each backend has exited, as after a restart.
                    "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
                    " WHERE application_name = 'cp_terminated' AND pid <> pg_backend_pid()"
                ).scalar()
            assert killed >= 1
    admin.dispose()
    with project.sessions() as session:
        assert set(session.scalars(select(AnswerRow.client_id))) >= set(stored)


def test_handing_out_a_pooled_postgresql_connection_sends_nothing_to_the_database(postgres_schema, tmp_path):
    """The pool's check is local (is the connection's socket still quiet?): a round trip per transaction saved."""
    from psycopg.pq import Trace

    engine = make_engine(postgres_schema)
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")
        pgconn = connection.connection.dbapi_connection.pgconn
    trace = tmp_path / "protocol.trace"
    with open(trace, "w") as file:
        pgconn.trace(file.fileno())
        pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
        for _ in range(5):
            with engine.connect() as connection:
                assert connection.connection.dbapi_connection.pgconn is pgconn  # the same pooled connection
        pgconn.untrace()
    engine.dispose()
    sent = [line for line in trace.read_text().splitlines() if line.startswith("F")]
    assert sent == []


def test_a_pooled_postgresql_connection_idle_for_long_is_pinged_and_replaced_when_the_ping_fails(
    postgres_schema, monkeypatch
):
    """A peer gone without closing its end leaves nothing to read: a long-idle connection is pinged before use."""
    from crowdpatch.store import liveness

    engine = make_engine(postgres_schema)

    def backend() -> int:
        with engine.connect() as connection:
            return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()

    first = backend()
    monkeypatch.setattr(liveness, "PING_AFTER_IDLE_SECONDS", 0.0)
    pings = []
    answer = engine.dialect.do_ping

    def ping(dbapi_connection) -> bool:
        pings.append(dbapi_connection)
        return answer(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", ping)
    assert backend() == first and len(pings) == 1  # pinged, answered: kept

    def silent(dbapi_connection) -> bool:
        pings.append(dbapi_connection)
        raise OperationalError("SELECT 1", {}, psycopg.OperationalError("server closed the connection"))

    monkeypatch.setattr(engine.dialect, "do_ping", silent)
    replaced = backend()
    engine.dispose()
    assert replaced != first and len(pings) == 2  # the fresh connection, just made, is not pinged
