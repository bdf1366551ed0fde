"""A served PostgreSQL study has its lease table vacuumed by the server, not only by autovacuum's minute visits."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from sqlalchemy import text

from crowdpatch.server.app import create_app
from helpers.sessions import open_session

VACUUMS_OF_LEASES = text(
    "SELECT vacuum_count, n_dead_tup FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = 'lease'"
)


def test_while_serving_on_postgresql_the_answered_leases_are_vacuumed_away(make_project, postgres_schema) -> None:
    def configure(config) -> None:
        config.db_url = postgres_schema
        config.crowd.gold_rate = 0.0
        config.patches.presentation = "single"  # yes/no windows, one per screen

    project = make_project(n_images=2, size=96, configure=configure)
    app = create_app(project)
    with TestClient(app) as client:
        vacuum = app.state.lease_vacuum
        auths = [open_session(client, project, f"p{i}") for i in range(3)]
        tasks = [client.get("/api/v1/tasks/next", headers=auth).json() for auth in auths]
        answered = 0
        for step in range(30):  # each answer deletes its lease: a dead row in the lease table
            k = step % len(auths)
            if tasks[k] is None:
                continue
            body = {"task_id": tasks[k]["task_id"], "answer": "yes", "client_id": f"c-{step}", "client_ms": 1500}
            response = client.post("/api/v1/answers", json={**body, "next": True}, headers=auths[k])
            assert response.status_code == 201, response.text
            tasks[k] = response.json()["next"]
            answered += 1
        assert answered >= 10
        answered_at = vacuum.vacuums
        deadline = time.monotonic() + 20
        with project.engine.connect() as connection:
            while time.monotonic() < deadline:
                counted, dead = connection.execute(VACUUMS_OF_LEASES).one()
                if vacuum.vacuums > answered_at and counted >= 1 and dead == 0:
                    break
                time.sleep(0.2)
                connection.rollback()  # a fresh snapshot of the statistics at each look
        assert vacuum.vacuums > answered_at and vacuum.errors == 0
        assert counted >= 1 and dead == 0, (counted, dead)
    assert not vacuum.alive  # stopped with the server


def test_a_sqlite_study_has_no_lease_vacuum(make_project) -> None:
    app = create_app(make_project(n_images=1))
    with TestClient(app):
        assert app.state.lease_vacuum is None


def test_vacuuming_the_lease_table_never_truncates_it_so_answers_never_wait_for_its_exclusive_lock(
    make_project, postgres_schema
) -> None:
    """Migration 0013: truncating a table's empty tail takes its ``ACCESS EXCLUSIVE`` lock, which every answer's
    statements wait for; under load a vacuum spent seconds trying for it. The lease table keeps its pages.
    (Leases of workers that do not exist: the lease table checks no reference, see migration 0011.)"""
    from alembic import command

    from crowdpatch.store.db import alembic_config, normalize_url

    def configure(config) -> None:
        config.db_url = postgres_schema

    project = make_project(n_images=1, configure=configure)
    engine = project.engine
    emptied = text(
        "INSERT INTO lease (task_id, worker_id, expires_at, leased_at)"
        " SELECT t.id, n, 0, 0 FROM task t CROSS JOIN generate_series(1000001, 1002000) AS n;"
        " DELETE FROM lease"
    )

    def pages_after_a_vacuum_of_an_emptied_lease_table() -> tuple[int, int]:
        with engine.connect() as connection:
            connection.execute(emptied)
            before = connection.scalar(text("SELECT pg_relation_size('lease')"))  # before autovacuum may look
            connection.commit()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM lease"))
            return before, connection.scalar(text("SELECT pg_relation_size('lease')"))

    before, after = pages_after_a_vacuum_of_an_emptied_lease_table()
    assert before > 8192 and after == before  # many pages of dead leases, all kept
    engine.dispose()
    command.downgrade(alembic_config(normalize_url(postgres_schema)), "0012")
    before, after = pages_after_a_vacuum_of_an_emptied_lease_table()
    assert before > 8192 and after == 0  # without it the vacuum truncates them
    command.upgrade(alembic_config(normalize_url(postgres_schema)), "head")
