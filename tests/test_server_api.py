"""The JSON API contract, driven through the real ASGI app (FastAPI's TestClient)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, inspect, select, text

from crowdpatch.crowd.votes import votes_target
from crowdpatch.server.app import create_app
from crowdpatch.server.tokens import make_invite
from crowdpatch.store.db import alembic_config
from crowdpatch.store.models import AnswerRow, LeaseRow, TaskRow, WorkerRow
from helpers.old_rows import add_open_task, add_project_and_image
from helpers.sessions import open_session


def small_session(config) -> None:
    config.server.answers_per_session = 6
    config.crowd.gold_rate = 0.0


@pytest.fixture
def served(make_project):
    project = make_project(n_images=3, size=64, configure=small_session)
    with TestClient(create_app(project)) as client:
        yield project, client


def test_a_prolific_worker_gets_tasks_answers_once_and_a_replay_stores_nothing(served):
    project, client = served
    auth = open_session(client, project)
    task = client.get("/api/v1/tasks/next", headers=auth).json()
    assert task["kind"] == "verify" and task["question"].startswith("Is the object")
    assert client.get(task["image_url"]).headers["content-type"] == "image/jpeg"
    body = {"task_id": task["task_id"], "answer": "yes", "client_id": "c-1", "client_ms": 1500}
    first = client.post("/api/v1/answers", json=body, headers=auth)
    again = client.post("/api/v1/answers", json=body, headers=auth)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    with project.sessions() as session:
        stored = session.scalars(select(AnswerRow).where(AnswerRow.client_id == "c-1")).all()
    assert len(stored) == 1 and stored[0].time_source == "measured" and stored[0].seconds == pytest.approx(1.5)


def test_answers_to_tasks_not_leased_are_409_and_malformed_bodies_422(served):
    project, client = served
    alice, bob = open_session(client, project, "alice"), open_session(client, project, "bob")
    task = client.get("/api/v1/tasks/next", headers=alice).json()
    stolen = {"task_id": task["task_id"], "answer": "no", "client_id": "b-1", "client_ms": 900}
    assert client.post("/api/v1/answers", json=stolen, headers=bob).status_code == 409
    for bad in (
        {"task_id": task["task_id"], "answer": "maybe", "client_id": "a", "client_ms": 1},
        {"task_id": task["task_id"], "answer": "yes", "client_ms": 1},
        {"task_id": "x", "answer": "yes", "client_id": "a", "client_ms": 1},
    ):
        assert client.post("/api/v1/answers", json=bad, headers=alice).status_code == 422
    assert client.get("/api/v1/tasks/next").status_code == 401


def test_progress_needs_the_api_key(served):
    project, client = served
    url = f"/api/v1/projects/{project.config.name}/progress"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"X-API-Key": "wrong"}).status_code == 401
    body = client.get(url, headers={"X-API-Key": project.config.server.effective_api_key()}).json()
    assert body["images"] == {"verify": 3} and body["questions"]["verify"]["open"] > 0


def test_local_sessions_need_a_valid_invite_and_mturk_previews_cannot_answer(served):
    project, client = served
    url = f"/api/v1/projects/{project.config.name}/sessions"
    assert client.post(url, json={"platform": "local", "worker_id": "w", "invite": "nope.abc"}).status_code == 403
    invite = make_invite(project.config.server.invite_secret, project.uid, "lab")
    assert client.post(url, json={"platform": "local", "worker_id": "w", "invite": invite}).status_code == 201
    preview = {"platform": "mturk", "worker_id": "", "assignment_id": "ASSIGNMENT_ID_NOT_AVAILABLE"}
    assert client.post(url, json={**preview, "worker_id": "A1"}).status_code == 403


def test_undo_takes_back_the_last_answer_while_its_question_is_open(served):
    project, client = served
    auth = open_session(client, project)
    task = client.get("/api/v1/tasks/next", headers=auth).json()
    client.post(
        "/api/v1/answers",
        json={"task_id": task["task_id"], "answer": "yes", "client_id": "u1", "client_ms": 800},
        headers=auth,
    )
    back = client.post("/api/v1/answers/undo", headers=auth)
    assert back.status_code == 200 and back.json()["task_id"] == task["task_id"]
    with project.sessions() as session:
        assert session.scalar(select(func.count()).select_from(AnswerRow)) == 0
    redo = client.post(
        "/api/v1/answers",
        json={"task_id": task["task_id"], "answer": "no", "client_id": "u2", "client_ms": 700},
        headers=auth,
    )
    assert redo.status_code == 201
    # A second worker agrees with "no": the question closes, and the answer can no longer be undone.
    other = open_session(client, project, "p2")
    task2 = client.get("/api/v1/tasks/next", headers=other).json()
    assert task2["task_id"] == task["task_id"]
    client.post(
        "/api/v1/answers",
        json={"task_id": task2["task_id"], "answer": "no", "client_id": "u3", "client_ms": 700},
        headers=other,
    )
    assert client.post("/api/v1/answers/undo", headers=other).status_code == 409


def test_a_session_ends_after_its_answers_with_the_platforms_completion(served):
    project, client = served
    project.config.server.answers_per_session = 2
    auth = open_session(client, project)
    for i in range(2):
        task = client.get("/api/v1/tasks/next", headers=auth).json()
        result = client.post(
            "/api/v1/answers",
            json={"task_id": task["task_id"], "answer": "yes", "client_id": f"d{i}", "client_ms": 900},
            headers=auth,
        ).json()
    assert result["session_complete"]
    assert client.get("/api/v1/tasks/next", headers=auth).status_code == 204
    done = client.post("/api/v1/sessions/complete", headers=auth).json()
    assert done["code"] == project.config.server.prolific_completion_code and done["code"] in done["redirect_url"]


def test_too_fast_workers_are_stopped_politely(make_project):
    def configure(config):
        config.crowd.gold_rate = 0.0
        config.crowd.too_fast_min_answers = 3

    project = make_project(n_images=3, size=64, configure=configure)
    with TestClient(create_app(project)) as client:
        auth = open_session(client, project)
        for i in range(3):
            task = client.get("/api/v1/tasks/next", headers=auth).json()
            client.post(
                "/api/v1/answers",
                json={"task_id": task["task_id"], "answer": "yes", "client_id": f"f{i}", "client_ms": 50},
                headers=auth,
            )
        stopped = client.get("/api/v1/tasks/next", headers=auth)
    assert stopped.status_code == 403 and "Thank you" in stopped.json()["detail"]
    with project.sessions() as session:
        assert session.scalar(select(WorkerRow.stopped_reason)) == "too_fast"


def test_concurrent_workers_never_over_ask_a_question_on_sqlite(make_project):
    project = make_project(n_images=3, size=64, configure=lambda c: setattr(c.crowd, "gold_rate", 0.0))
    project.config.server.answers_per_session = 1000
    acknowledged: list[str] = []
    with TestClient(create_app(project)) as client:

        def work(name: str) -> None:
            auth = open_session(client, project, name)
            for i in range(400):
                response = client.get("/api/v1/tasks/next", headers=auth)
                if response.status_code != 200:
                    return
                task = response.json()
                answer = "yes" if (hash(name) + i) % 3 else "no"
                posted = client.post(
                    "/api/v1/answers",
                    json={"task_id": task["task_id"], "answer": answer, "client_id": f"{name}-{i}", "client_ms": 900},
                    headers=auth,
                )
                if posted.status_code == 201:
                    acknowledged.append(f"{name}-{i}")

        threads = [threading.Thread(target=work, args=(f"w{k}",)) for k in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    with project.sessions() as session:
        stored = set(session.scalars(select(AnswerRow.client_id)))
        per_task = Counter(session.scalars(select(AnswerRow.task_id)))
        for task in session.scalars(select(TaskRow)):
            values = list(
                session.scalars(select(AnswerRow.value).where(AnswerRow.task_id == task.id).order_by(AnswerRow.id))
            )
            assert per_task[task.id] <= max(votes_target(values, task.votes_wanted, True), 2)
    assert set(acknowledged) <= stored and len(acknowledged) == len(stored) > 0


def test_a_database_at_revision_0001_upgrades_in_place_and_its_questions_are_served(tmp_path):
    """A store written at revision 0001 keeps its questions and workers, and the server leases and times them."""
    from alembic import command

    from crowdpatch.config import ProjectConfig
    from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
    from crowdpatch.crowd.dispatch.memory import SimulatedClock
    from crowdpatch.store import open_database

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0001")
    engine = create_engine(url)
    assert "leased_at" not in {c["name"] for c in inspect(engine).get_columns("lease")}
    with engine.begin() as c:
        add_project_and_image(c)
        add_open_task(c)
        c.execute(
            text(
                "INSERT INTO worker"
                " (id, project_id, platform, external_id, attributes, gold_seen, gold_correct, too_fast,"
                " banned, created_at) VALUES (1, 1, 'local', 'w', '{}', 0, 0, 0, 0, '2026-01-01')"
            )
        )
    engine.dispose()
    _, sessions = open_database(url)
    clock = SimulatedClock(100.0)
    dispatcher = DatabaseDispatcher(sessions, 1, ProjectConfig(name="p", target="horse"), clock=clock)
    task = dispatcher.next_task(1)
    assert task.task_id == 1 and task.kind == "verify" and "horse" in task.question
    clock.now = 103.5
    stored = dispatcher.submit(1, 1, "yes", client_id="c", client_ms=None)
    with sessions() as session:
        answer = session.get(AnswerRow, stored.answer_id)
        assert (answer.shown_at, answer.answered_at, answer.seconds) == (100.0, 103.5, 3.5)  # timed from the lease
        assert session.get(WorkerRow, 1).stopped_reason is None


def test_a_polygon_answer_is_validated_stored_and_its_measured_time_reaches_the_summary(served):
    project, client = served
    key = {"X-API-Key": project.config.server.effective_api_key()}
    base = f"/api/v1/projects/{project.config.name}"
    assert client.post(f"{base}/polygon-tasks", headers=key).json()["created"] == 3
    auth = open_session(client, project, "drawer", mode="polygon")
    task = client.get("/api/v1/tasks/next", headers=auth).json()
    assert task["kind"] == "polygon"
    outside = {
        "task_id": task["task_id"],
        "answer": {"polygon": [[0, 0], [500, 0], [5, 5]]},
        "client_id": "p0",
        "client_ms": 1,
    }
    assert client.post("/api/v1/answers", json=outside, headers=auth).status_code == 422
    drawn = {
        "task_id": task["task_id"],
        "answer": {"polygon": [[1, 1], [30, 2], [20, 40]]},
        "client_id": "p1",
        "client_ms": 42_000,
    }
    assert client.post("/api/v1/answers", json=drawn, headers=auth).status_code == 201
    summary = client.post(f"{base}/export", json={"formats": ["png"]}, headers=key).json()["summary"]
    assert summary["polygon_seconds_are"] == "measured"
    assert summary["measured_seconds_per_image"]["polygon"] == pytest.approx(42.0)


def answer_and_next(client, auth, task, value="yes", client_id="n", client_ms=1500, **extra):
    body = {
        "task_id": task["task_id"],
        "answer": value,
        "client_id": client_id,
        "client_ms": client_ms,
        "next": True,
        **extra,
    }
    return client.post("/api/v1/answers", json=body, headers=auth)


def test_an_answer_can_bring_the_next_question_in_the_same_round_trip(served):
    project, client = served
    auth = open_session(client, project)
    first = client.get("/api/v1/tasks/next", headers=auth).json()
    shown = client.get("/api/v1/tasks/next", params={"exclude": first["task_id"]}, headers=auth).json()  # the prefetch
    posted = answer_and_next(client, auth, first, client_id="n-1", exclude=[shown["task_id"]])
    assert posted.status_code == 201
    result = posted.json()
    following = result["next"]
    assert result["next_status"] == "task" and following["task_id"] not in (first["task_id"], shown["task_id"])
    assert following["kind"] == "verify" and client.get(following["image_url"]).status_code == 200
    with project.sessions() as session:
        leased = set(
            session.scalars(select(LeaseRow.task_id).where(LeaseRow.worker_id == session.scalar(select(WorkerRow.id))))
        )
        assert session.scalar(select(func.count()).select_from(AnswerRow).where(AnswerRow.client_id == "n-1")) == 1
    assert leased == {int(shown["task_id"]), int(following["task_id"])}
    # A replay stores nothing and hands back the question already held, not a third one.
    replay = answer_and_next(client, auth, first, client_id="n-1", exclude=[shown["task_id"]])
    assert replay.status_code == 200 and replay.json()["next"]["task_id"] == following["task_id"]
    # Without "next" the answer is as before.
    plain = client.post(
        "/api/v1/answers",
        json={"task_id": shown["task_id"], "answer": "no", "client_id": "n-2", "client_ms": 900},
        headers=auth,
    )
    assert plain.status_code == 201 and plain.json()["next"] is None and plain.json()["next_status"] is None


def test_the_next_question_with_an_answer_says_why_there_is_none(served):
    project, client = served
    project.config.server.answers_per_session = 1
    auth = open_session(client, project)
    task = client.get("/api/v1/tasks/next", headers=auth).json()
    result = answer_and_next(client, auth, task, client_id="w-1").json()
    assert result["session_complete"] and result["next"] is None and result["next_status"] == "session_complete"
    # An answer that gets its worker stopped is stored, and the next question is refused politely.
    project.config.server.answers_per_session = 100
    project.config.crowd.too_fast_min_answers = 2
    fast = open_session(client, project, "speedy")
    first = client.get("/api/v1/tasks/next", headers=fast).json()
    second = answer_and_next(client, fast, first, client_id="s-1", client_ms=40).json()["next"]
    stopped = answer_and_next(client, fast, second, client_id="s-2", client_ms=40)
    assert stopped.status_code == 201 and stopped.json()["next_status"] == "stopped"
    with project.sessions() as session:
        assert (
            session.scalar(select(func.count()).select_from(AnswerRow).where(AnswerRow.client_id.in_(["s-1", "s-2"])))
            == 2
        )


def test_a_bad_exclude_list_is_a_422(served):
    project, client = served
    auth = open_session(client, project)
    task = client.get("/api/v1/tasks/next", headers=auth).json()
    assert answer_and_next(client, auth, task, exclude=["x"]).status_code == 422
    assert answer_and_next(client, auth, task, exclude=[str(i) for i in range(1, 10)]).status_code == 422


def test_a_request_without_a_valid_token_is_401_whatever_its_body(served):
    project, client = served
    malformed = {"task_id": "x", "answer": "maybe"}
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        response = client.post("/api/v1/answers", json=malformed, headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/tasks/next").status_code == 401
    schema = client.get("/openapi.json").json()["paths"]
    for path, method in (("/api/v1/answers", "post"), ("/api/v1/tasks/next", "get"), ("/api/v1/answers/undo", "post")):
        assert "authorization" in {p["name"] for p in schema[path][method]["parameters"]}


def test_a_serving_process_freezes_its_startup_objects(make_project):
    """The app ``serve`` runs keeps its long-lived objects out of the collector's full passes (their
    walk was the p99 latency under load); a plain ``create_app`` (tests, embedding) leaves the collector alone."""
    project = make_project(n_images=2, size=32)
    script = (
        "import gc, sys; from pathlib import Path\n"
        "from crowdpatch.server.app import create_app, open_served_project, serving_app\n"
        "project = open_served_project(Path(sys.argv[1]))\n"
        "create_app(project); plain = gc.get_freeze_count()\n"
        "serving_app(project); print(plain, gc.get_freeze_count())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(project.directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    plain, served = map(int, result.stdout.split())
    assert plain == 0
    assert served > 10_000
