"""The load benchmark's SQL statement counter: off by default, and exact when a served project is answered."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from crowdpatch.server.app import create_app
from crowdpatch.store.models import TaskRow
from crowdpatch.store.statements import ENV_STATEMENT_COUNTS, read_statement_counts
from helpers.sessions import open_session


def no_gold(config) -> None:
    config.crowd.gold_rate = 0.0


def test_an_answer_counts_its_statements_and_a_replay_counts_the_same_each_time(
    make_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "counts"
    monkeypatch.setenv(ENV_STATEMENT_COUNTS, str(folder))
    project = make_project(n_images=2, size=64, configure=no_gold)
    with TestClient(create_app(project)) as client:
        auth = open_session(client, project, "p1")
        task = client.get("/api/v1/tasks/next", headers=auth).json()
        body = {"task_id": task["task_id"], "answer": "yes", "client_id": "c-1", "client_ms": 1500}

        before = read_statement_counts(folder)
        assert client.post("/api/v1/answers", json=body, headers=auth).status_code == 201
        answered = read_statement_counts(folder)
        assert answered > before > 0

        replays = []
        for _ in range(3):
            start = read_statement_counts(folder)
            assert client.post("/api/v1/answers", json=body, headers=auth).status_code == 200
            replays.append(read_statement_counts(folder) - start)
    assert replays[0] > 0 and len(set(replays)) == 1, replays
    assert list(folder.glob("*.count")), "one count file per process"


def test_nothing_is_counted_unless_asked(make_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_STATEMENT_COUNTS, raising=False)
    project = make_project(n_images=2, size=64, configure=no_gold)
    with TestClient(create_app(project)) as client:
        auth = open_session(client, project, "p1")
        assert client.get("/api/v1/tasks/next", headers=auth).status_code == 200
    assert not list(tmp_path.rglob("*.count"))


def test_on_postgresql_an_answer_and_its_next_question_take_two_statements_three_when_it_closes(
    make_project, postgres_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer path's round trips on PostgreSQL, counted per request, so they cannot silently grow back.

    An answer with its next question: the locked read, then the write with the lease (2). Closing the
    question adds the closing call (3); a "yes" window also reads its region's windows (4) and, when it
    has children to ask, inserts them in one statement (5).
    """
    folder = tmp_path / "counts"
    monkeypatch.setenv(ENV_STATEMENT_COUNTS, str(folder))

    def configure(config) -> None:
        config.db_url = postgres_schema
        config.crowd.gold_rate = 0.0
        config.crowd.constant_run_answers = 1000  # the constant-answer check reads answers: not measured here
        config.patches.presentation = "single"

    project = make_project(n_images=2, size=128, configure=configure)
    costs: dict[str, list[int]] = {"open": [], "no": [], "yes": [], "children": []}
    with TestClient(create_app(project)) as client, project.sessions() as session:
        auths = [open_session(client, project, f"p{i}") for i in range(3)]
        tasks = [client.get("/api/v1/tasks/next", headers=auth).json() for auth in auths]
        for step in range(90):
            k = step % len(auths)
            task = tasks[k]
            if task is None:
                continue
            task_id = int(task["task_id"])
            # "yes" to verifications and to every third window: some children, mostly closings without.
            value = "yes" if task["kind"] == "verify" or task_id % 3 == 0 else "no"
            body = {"task_id": task["task_id"], "answer": value, "client_id": f"c-{step}", "client_ms": 1500}
            body["next"] = True
            questions_before = session.scalar(select(func.count()).select_from(TaskRow))
            before = read_statement_counts(folder)
            response = client.post("/api/v1/answers", json=body, headers=auths[k])
            spent = read_statement_counts(folder) - before
            assert response.status_code == 201, response.text
            tasks[k] = response.json()["next"]
            session.expire_all()
            decision = session.get(TaskRow, task_id).decision
            created = session.scalar(select(func.count()).select_from(TaskRow)) > questions_before
            if task["kind"] == "patch" and tasks[k] is not None:
                costs["children" if created else decision or "open"].append(spent)
    assert all(costs.values()), costs
    assert set(costs["open"]) == {2}, costs
    assert set(costs["no"]) == {3}, costs
    assert set(costs["yes"]) == {4}, costs
    assert set(costs["children"]) == {5}, costs
