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
