"""Input the API does not document is a JSON 422 that says what is wrong: never a 500, never converted into an answer.

Lone surrogates (``"\\ud800"``, valid JSON escapes of no Unicode text), NUL characters (which PostgreSQL
refuses to store), and numbers sent as anything but JSON numbers (``true``, ``"1"``, ``1.0`` for a cell).
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from crowdpatch.server.app import create_app
from crowdpatch.store.models import AnswerRow, WorkerRow
from helpers.sessions import open_session


def quiet(config) -> None:
    config.server.answers_per_session = 50
    config.crowd.gold_rate = 0.0


@pytest.fixture
def served(make_project, database):
    def configure(config) -> None:
        quiet(config)
        config.db_url = database

    project = make_project(n_images=3, size=64, configure=configure)
    with TestClient(create_app(project), raise_server_exceptions=False) as client:
        yield project, client


def post_raw(client, url: str, body: dict, headers: dict | None = None, swap: tuple[str, str] = ("", "")):
    """POST ``body`` as JSON text with ``swap[0]`` replaced by the raw JSON ``swap[1]`` (an escape json.dumps
    would not write, such as a lone surrogate)."""
    text = json.dumps(body).replace(*swap) if swap[0] else json.dumps(body)
    return client.post(url, content=text, headers={**(headers or {}), "Content-Type": "application/json"})


def refused_at(response, field: str) -> str:
    """The message of a JSON 422 about ``field`` (the response must be a 422 whose body is JSON)."""
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    messages = [error["msg"] for error in errors if error["loc"][-1] == field or field in error["loc"]]
    assert messages, errors
    return messages[0]


SURROGATE = "\\ud800"
"""A lone surrogate as JSON writes it: valid JSON text, no Unicode a server can store or echo in UTF-8."""


@pytest.mark.parametrize("field", ["worker_id", "study_id", "session_id", "invite"])
def test_a_lone_surrogate_in_a_session_field_is_a_json_422(served, field):
    project, client = served
    body = {"platform": "prolific", "worker_id": "w", "study_id": "s", "session_id": "x", "invite": "i"}
    body[field] = "MARK"
    response = post_raw(client, f"/api/v1/projects/{project.config.name}/sessions", body, swap=("MARK", SURROGATE))
    assert "unicode" in refused_at(response, field).lower()
    assert response.json()["detail"][0]["input"] == SURROGATE  # echoed as its escape, readable


@pytest.mark.parametrize("field", ["task_id", "client_id", "answer", "exclude"])
def test_a_lone_surrogate_in_an_answer_field_is_a_json_422(served, field):
    project, client = served
    auth = open_session(client, project)
    task = client.get("/api/v1/tasks/next", headers=auth).json()
    body = {"task_id": task["task_id"], "answer": "yes", "client_id": "c", "client_ms": 10, "next": True}
    body[field] = ["MARK"] if field == "exclude" else "MARK"
    response = post_raw(client, "/api/v1/answers", body, auth, swap=("MARK", SURROGATE))
    refused_at(response, field)
    with project.sessions() as session:
        assert session.scalar(select(func.count()).select_from(AnswerRow)) == 0


def test_a_lone_surrogate_in_a_requester_field_is_a_json_422(served):
    project, client = served
    key = {"X-API-Key": project.config.server.effective_api_key()}
    response = post_raw(
        client, f"/api/v1/projects/{project.config.name}/invites", {"label": "MARK"}, key, swap=("MARK", SURROGATE)
    )
    refused_at(response, "label")


def test_a_nul_in_a_worker_or_client_id_is_a_422_and_nothing_is_stored(served):
    project, client = served
    sessions = f"/api/v1/projects/{project.config.name}/sessions"
    for field in ("worker_id", "study_id", "session_id", "hit_id"):
        body = {"platform": "prolific", "worker_id": "w", field: "a\x00b"}
        assert "NUL" in refused_at(client.post(sessions, json=body), field)
    auth = open_session(client, project)
    task = client.get("/api/v1/tasks/next", headers=auth).json()
    body = {"task_id": task["task_id"], "answer": "yes", "client_id": "c\x00", "client_ms": 10}
    assert "NUL" in refused_at(client.post("/api/v1/answers", json=body, headers=auth), "client_id")
    with project.sessions() as session:
        assert session.scalars(select(WorkerRow.external_id)).all() == ["p1"]
        assert session.scalar(select(func.count()).select_from(AnswerRow)) == 0
    body["client_id"] = "c"
    assert client.post("/api/v1/answers", json=body, headers=auth).status_code == 201


# -- numbers are JSON numbers -------------------------------------------------------------------


def answer(client, auth, task, value, client_id="c"):
    body = {"task_id": task["task_id"], "answer": value, "client_id": client_id, "client_ms": 900}
    return client.post("/api/v1/answers", json=body, headers=auth)


def test_grid_cells_are_whole_json_numbers(photo_project):
    project = photo_project(quiet)
    with TestClient(create_app(project)) as client:
        for worker in ("v1", "v2"):  # two agreeing "yes" decide a verification: the regions get their grids
            auth = open_session(client, project, worker)
            while (leased := client.get("/api/v1/tasks/next", headers=auth)).status_code == 200 and (
                task := leased.json()
            )["kind"] == "verify":
                assert answer(client, auth, task, "yes", f"{worker}-{task['task_id']}").status_code == 201
        assert task["kind"] == "grid"
        for cells in ([True], ["1"], [1.0], [1, False]):
            assert answer(client, auth, task, {"cells": cells}).status_code == 422, cells
        assert answer(client, auth, task, {"cells": [1, 0]}).status_code == 201
        with project.sessions() as session:
            stored = session.scalar(select(AnswerRow.value).where(AnswerRow.task_id == int(task["task_id"])))
        assert stored == {"cells": [0, 1]}


def test_polygon_coordinates_are_numbers_and_a_polygon_encloses_an_area(make_project):
    project = make_project(n_images=2, size=64, configure=quiet)
    with TestClient(create_app(project)) as client:
        key = {"X-API-Key": project.config.server.effective_api_key()}
        assert client.post(f"/api/v1/projects/{project.config.name}/polygon-tasks", headers=key).status_code == 200
        auth = open_session(client, project, "drawer", mode="polygon")
        task = client.get("/api/v1/tasks/next", headers=auth).json()
        assert task["kind"] == "polygon"
        refused = {
            "strings": [["10", "10"], ["40", "10"], ["40", "40"]],
            "a boolean": [[True, 10], [40, 10], [40, 40]],
            "one point thrice": [[20, 20], [20, 20], [20, 20]],
            "points on one line": [[10, 10], [20, 20], [30, 30], [40, 40]],
            "under a square pixel": [[10, 10], [11, 10], [11, 10.5]],
        }
        for what, polygon in refused.items():
            response = answer(client, auth, task, {"polygon": polygon})
            assert response.status_code == 422, what
        flat = answer(client, auth, task, {"polygon": refused["points on one line"]})
        assert "encloses at least 1 square pixel, this one 0" in flat.json()["detail"]
        assert answer(client, auth, task, {"polygon": [[10, 10], [40.5, 10], [40, 40]]}).status_code == 201
