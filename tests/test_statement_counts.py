"""The load benchmark's SQL statement counter: off by default, and exact when a served project is answered."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from crowdpatch.server.app import create_app
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
