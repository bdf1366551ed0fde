"""The fast routes of the answer loop answer exactly as the documented FastAPI routes do.

Two identical projects: one served as ``crowdpatch serve`` serves it (fast routes first), one with
the FastAPI routes alone. The same script of requests, well-formed and not, must get the same
statuses and bodies from both; the fast routes must take the well-formed answers and hand the rest on.
And a FastAPI route that gains what its fast route does not do (a dependency, a parameter) fails here.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from crowdpatch.server import api
from crowdpatch.server.app import create_app
from crowdpatch.server.schemas import AnswerRequest
from crowdpatch.server.state import worker_session
from crowdpatch.store.models import ImageRow

VOLATILE = {"token", "image_url", "context_url", "lease_expires_at"}
"""Fields that differ between two projects by design (their secrets, the clock)."""


def comparable(response) -> tuple[int, object]:
    try:
        body = response.json()
    except ValueError:
        body = response.text

    def strip(value):
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items() if key not in VOLATILE}
        if isinstance(value, list):
            return [strip(item) for item in value]
        return value

    return response.status_code, strip(body)


def script(client: TestClient, project_name: str) -> list[tuple[int, object]]:
    """A worker's session with the requests a real client (or a broken one) sends; every response, comparable."""
    results = []

    def record(response):
        results.append(comparable(response))
        return response

    token = record(
        client.post(
            f"/api/v1/projects/{project_name}/sessions",
            json={"platform": "prolific", "worker_id": "w", "study_id": "s"},
        )
    ).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    post = {**auth, "Content-Type": "application/json"}
    record(client.get("/api/v1/tasks/next"))  # no token: 401
    task = record(client.get("/api/v1/tasks/next", headers=auth)).json()
    held = record(client.get("/api/v1/tasks/next", params={"exclude": task["task_id"]}, headers=auth)).json()
    record(client.get("/api/v1/tasks/next", params={"exclude": "x" * 401}, headers=auth))  # too long: 422
    record(client.get("/api/v1/tasks/next", params={"exclude": task["task_id"], "other": "1"}, headers=auth))
    answer = {"task_id": task["task_id"], "answer": "yes", "client_id": "c-1", "client_ms": 1200}
    for raw in (
        b'{"task_id": ',
        b"[]",
        json.dumps({**answer, "extra": 1}).encode(),
        json.dumps({**answer, "answer": {"polygon": [[1, 2], [3, 4], [5, float("nan")]]}}).encode(),
        json.dumps({**answer, "client_ms": -1}).encode(),
    ):
        record(client.post("/api/v1/answers", content=raw, headers=post))  # malformed: 422, FastAPI's error list
    record(
        client.post(
            "/api/v1/answers",
            content=b'{"task_id": "x"}',
            headers={"Authorization": "Bearer nope", "Content-Type": "application/json"},
        )
    )
    record(
        client.post(
            "/api/v1/answers", content=json.dumps(answer).encode(), headers={**auth, "Content-Type": "text/plain"}
        )
    )
    record(
        client.post(
            "/api/v1/answers",
            content=json.dumps(answer).encode(),
            headers={**auth, "Content-Type": "application/json; charset=utf-8"},
        )
    )
    record(client.post("/api/v1/answers", content=json.dumps(answer).encode(), headers=post))  # the replay: 200
    record(client.post("/api/v1/answers", json={**answer, "client_id": "c-2"}, headers=post))  # answered already: 409
    following = record(
        client.post(
            "/api/v1/answers",
            json={"task_id": held["task_id"], "answer": "no", "client_id": "c-3", "client_ms": 900, "next": True},
            headers=post,
        )
    ).json()
    assert following["next_status"] == "task"
    record(client.get("/api/v1/answers", headers=auth))  # wrong method: 405
    return results


@pytest.fixture
def two_projects(make_project):
    def no_gold(config) -> None:
        config.crowd.gold_rate = 0.0  # gold questions are mixed in at random

    return make_project(n_images=3, name="fast", configure=no_gold), make_project(
        n_images=3, name="fast_twin", configure=no_gold
    )


def test_the_fast_routes_answer_every_request_as_the_fastapi_routes_do(two_projects, monkeypatch):
    fast_project, plain_project = two_projects
    handed_on = []
    replay = api._replay
    monkeypatch.setattr(api, "_replay", lambda body, receive: handed_on.append(body) or replay(body, receive))
    with TestClient(create_app(fast_project)) as client:
        fast = script(client, "fast")
    with TestClient(create_app(plain_project, fast_routes=False)) as client:
        plain = script(client, "fast_twin")
    assert [status for status, _ in fast] == [201, 401, 200, 200, 422, 200] + [422] * 5 + [
        401,
        422,
        201,
        200,
        409,
        201,
        405,
    ]
    assert fast == plain
    # The fast routes took every well-formed request and handed on exactly those they do not read themselves.
    well_formed = json.dumps({"task_id": "1", "answer": "yes", "client_id": "c-1", "client_ms": 1200}).encode()
    assert handed_on[:3] == [b""] * 3  # no token, an exclude list too long, an unknown query parameter
    assert handed_on[3:5] == [b'{"task_id": ', b"[]"] and len(handed_on[5:8]) == 3  # five malformed bodies
    assert handed_on[8:] == [b'{"task_id": "x"}', well_formed, well_formed]  # a bad token; text/plain, a charset


def test_each_fast_route_stands_in_for_a_fastapi_route_that_reads_exactly_what_it_reads(make_project) -> None:
    """The same path and method; the bearer token the only dependency; the same body model or query field."""
    routes = {route.endpoint: route for route in api.router.routes}
    fast = {route.endpoint: route for route in api.fast_routes()}
    assert set(fast) == {api.post_answer, api.next_task}
    for endpoint, stand_in in fast.items():
        route = routes[endpoint]
        assert (route.path, route.methods) == (stand_in.path, {stand_in.method})
        inputs = route.dependant
        assert [dependency.call for dependency in inputs.dependencies] == [worker_session]
        assert inputs.header_params == inputs.cookie_params == inputs.path_params == []
        if endpoint is api.post_answer:
            assert [(p.name, p.field_info.annotation) for p in inputs.body_params] == [("body", AnswerRequest)]
            assert inputs.query_params == []
        else:
            assert inputs.body_params == []
            assert [p.name for p in inputs.query_params] == ["exclude"]
            assert [m.max_length for m in inputs.query_params[0].field_info.metadata] == [api.MAX_EXCLUDE]
    # The application tries them first, ahead of every router.
    first = create_app(make_project(n_images=1)).router.routes[:2]
    assert [(route.method, route.path) for route in first] == [(r.method, r.path) for r in api.fast_routes()]


def test_a_handed_out_question_brings_its_images_size_and_only_undo_reads_the_image_off_the_event_loop(
    builtin_project, monkeypatch
) -> None:
    """The hand-out reads the image's size with the question: serving the next question reads no image from
    the store (on PostgreSQL a round trip per image a process had not yet handed out). A question handed back
    by undo has no size with it: its image is read once, never on the event loop (where a round trip would
    hold up every request of the process)."""
    app = create_app(builtin_project)
    state = app.state.crowdpatch
    read_on: list[bool] = []
    original = api.image_info

    def image_info(state_, image_id):
        if image_id not in state_.image_info:  # a read from the store
            try:
                asyncio.get_running_loop()
                read_on.append(True)
            except RuntimeError:
                read_on.append(False)
        return original(state_, image_id)

    monkeypatch.setattr(api, "image_info", image_info)
    with TestClient(app) as client:
        token = client.post(
            f"/api/v1/projects/{builtin_project.config.name}/sessions",
            json={"platform": "prolific", "worker_id": "w", "study_id": "s"},
        ).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        task = client.get("/api/v1/tasks/next", headers=auth).json()
        answer = {"task_id": task["task_id"], "answer": "yes", "client_id": "c-1", "client_ms": 1200, "next": True}
        following = client.post("/api/v1/answers", json=answer, headers=auth).json()["next"]
        assert following is not None
        assert read_on == []
        with builtin_project.sessions() as session:
            for shown in (task, following):
                image = session.get(ImageRow, shown["image_id"])
                assert (shown["image_width"], shown["image_height"]) == (image.width, image.height)
        answered = client.post(
            "/api/v1/answers", json={**answer, "task_id": following["task_id"], "client_id": "c-2"}, headers=auth
        )
        assert answered.status_code == 201
        back = client.post("/api/v1/answers/undo", headers=auth)
    assert back.status_code == 200, back.text
    assert back.json()["task_id"] == following["task_id"]
    assert (back.json()["image_width"], back.json()["image_height"]) == (
        following["image_width"],
        following["image_height"],
    )
    assert read_on == [False] and set(state.image_info) == {following["image_id"]}  # read once, off the loop
