"""A worker session gives its answers and no more: the quota, completion, and the questions a worker may hold.

Each test runs on SQLite and on PostgreSQL (where the counting takes the worker's row lock).
"""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.crowd.dispatch.rules import MAX_HELD, NewAnswer, SessionComplete
from crowdpatch.server.app import create_app
from crowdpatch.server.platforms import register_worker
from crowdpatch.store.models import AnswerRow, LeaseRow, WorkerRow
from helpers.sessions import open_session

QUOTA = 5


@pytest.fixture
def served(make_project, database):
    def configure(config) -> None:
        config.db_url = database
        config.server.answers_per_session = QUOTA
        config.crowd.gold_rate = 0.0

    project = make_project(n_images=12, size=64, configure=configure)
    with TestClient(create_app(project)) as client:
        yield project, client


def lease(client, auth, held: list[str]) -> str | None:
    """The next question (the ones ``held`` excluded), or None (204)."""
    response = client.get("/api/v1/tasks/next", params={"exclude": ",".join(held)} if held else None, headers=auth)
    assert response.status_code in (200, 204), response.text
    return response.json()["task_id"] if response.status_code == 200 else None


def answer(client, auth, task_id: str, client_id: str, value="no"):
    body = {"task_id": task_id, "answer": value, "client_id": client_id, "client_ms": 900}
    return client.post("/api/v1/answers", json=body, headers=auth)


def stored_answers(project, worker="p1") -> int:
    with project.sessions() as session:
        worker_id = session.scalar(select(WorkerRow.id).where(WorkerRow.external_id == worker))
        return session.scalar(select(func.count()).select_from(AnswerRow).where(AnswerRow.worker_id == worker_id))


def live_leases(project, worker="p1") -> int:
    with project.sessions() as session:
        worker_id = session.scalar(select(WorkerRow.id).where(WorkerRow.external_id == worker))
        return session.scalar(
            select(func.count())
            .select_from(LeaseRow)
            .where(LeaseRow.worker_id == worker_id, LeaseRow.expires_at > time.time())
        )


def test_a_worker_that_prefetches_all_it_may_gives_exactly_its_sessions_answers(served):
    project, client = served
    auth = open_session(client, project)
    held: list[str] = []
    statuses = []
    for k in range(3 * QUOTA):
        while len(held) < MAX_HELD and (task := lease(client, auth, held)) is not None:
            held.append(task)
        if not held:
            break
        statuses.append(answer(client, auth, held.pop(0), f"a{k}").status_code)
    assert statuses == [201] * QUOTA
    assert stored_answers(project) == QUOTA and live_leases(project) == 0
    assert client.get("/api/v1/tasks/next", headers=auth).status_code == 204


def test_questions_leased_before_the_quota_was_lowered_take_no_answer_past_it(served):
    project, client = served
    project.config.server.answers_per_session = 50
    auth = open_session(client, project)
    held: list[str] = []
    while len(held) < MAX_HELD:
        held.append(lease(client, auth, held))
    project.config.server.answers_per_session = 2
    responses = [answer(client, auth, task, f"b{k}") for k, task in enumerate(held)]
    assert [r.status_code for r in responses] == [201, 201, 409, 409]
    assert responses[1].json()["session_complete"]
    assert "answers are given" in responses[2].json()["detail"]
    assert stored_answers(project) == 2
    # A retry of an answer already stored is still that answer, past the quota or not.
    assert answer(client, auth, held[1], "b1").status_code == 200


def test_a_finished_session_takes_no_answer_no_undo_and_gets_no_question(served):
    project, client = served
    auth = open_session(client, project)
    first = lease(client, auth, [])
    assert answer(client, auth, first, "c0").status_code == 201
    held = lease(client, auth, [])
    done = client.post("/api/v1/sessions/complete", headers=auth)
    assert done.status_code == 200 and done.json()["code"] == project.config.server.prolific_completion_code
    late = answer(client, auth, held, "c1")
    assert late.status_code == 409 and "finished" in late.json()["detail"]
    undone = client.post("/api/v1/answers/undo", headers=auth)
    assert undone.status_code == 409 and "finished" in undone.json()["detail"]
    assert client.get("/api/v1/tasks/next", headers=auth).status_code == 204
    assert stored_answers(project) == 1
    again = open_session(client, project)  # the same worker coming back finds its session finished
    assert answer(client, again, held, "c2").status_code == 409
    assert client.post("/api/v1/sessions/complete", headers=again).json() == done.json()


def test_taking_answers_back_never_leaves_more_leases_than_a_worker_may_hold(served):
    project, client = served
    project.config.server.answers_per_session = 50
    auth = open_session(client, project)
    for k in range(2 * MAX_HELD):
        assert answer(client, auth, lease(client, auth, []), f"u{k}").status_code == 201
    statuses = [client.post("/api/v1/answers/undo", headers=auth) for _ in range(2 * MAX_HELD)]
    assert [r.status_code for r in statuses] == [200] * MAX_HELD + [409] * MAX_HELD
    assert "answer one before taking an answer back" in statuses[-1].json()["detail"]
    assert live_leases(project) == MAX_HELD and stored_answers(project) == MAX_HELD


@pytest.mark.parametrize("platform", ["prolific", "mturk", "local"])
def test_completing_a_session_without_an_answer_is_refused_unless_the_study_allows_it(served, platform):
    project, client = served
    extra = {"assignment_id": "A1", "hit_id": "H1"} if platform == "mturk" else {}
    if platform == "local":
        invite = client.post(
            f"/api/v1/projects/{project.config.name}/invites",
            json={},
            headers={"X-API-Key": project.config.server.effective_api_key()},
        )
        extra = {"invite": invite.json()["invite"]}
    auth = open_session(client, project, platform=platform, **extra)
    refused = client.post("/api/v1/sessions/complete", headers=auth)
    assert refused.status_code == 409
    assert refused.json()["reason"] == "no_answers" and refused.json()["title"] == "Nothing answered yet"
    assert "at least one answer" in refused.json()["detail"]
    with project.sessions() as session:
        assert session.scalar(select(WorkerRow.finished_at).where(WorkerRow.platform == platform)) is None
    assert lease(client, auth, []) is not None  # not finished: the session goes on
    project.config.server.complete_without_answers = True
    allowed = client.post("/api/v1/sessions/complete", headers=auth)
    assert allowed.status_code == 200
    if platform == "mturk":
        assert allowed.json()["fields"]["answers"] == "0"
    else:
        assert allowed.json()["code"]


@pytest.fixture
def racing(make_project, database):
    """A fresh project, its dispatcher, and a worker holding as many questions as it may: (project, dispatcher,
    worker, the held questions)."""

    def configure(config) -> None:
        config.db_url = database
        config.crowd.gold_rate = 0.0

    project = make_project(n_images=12, size=64, configure=configure)
    dispatcher = DatabaseDispatcher(project.sessions, project.id, project.config)
    worker = register_worker(project.sessions, project.id, "prolific", "racer", {}).id
    held: list[int] = []
    while len(held) < MAX_HELD:
        held.append(dispatcher.next_task(worker, exclude=tuple(held)).task_id)
    return project, dispatcher, worker, held


def answer_all_at_once(dispatcher, worker: int, held: list[int], max_answers: int | None = None) -> list[object]:
    """Answers to every held question, stored at once (a thread and a transaction each): each result or refusal."""
    start = threading.Barrier(len(held))
    outcomes: list[object] = []

    def store(task_id: int) -> None:
        start.wait()
        try:
            outcomes.append(dispatcher.store(NewAnswer(worker, task_id, "no", f"r{task_id}", 900), max_answers))
        except SessionComplete as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=store, args=(task_id,)) for task_id in held]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_answers_of_one_worker_arriving_at_once_never_pass_its_quota(racing):
    """Four answers of one worker stored at once (threads, one transaction each) with room for one more."""
    _, dispatcher, worker, held = racing
    outcomes = answer_all_at_once(dispatcher, worker, held, max_answers=1)
    assert sum(not isinstance(outcome, SessionComplete) for outcome in outcomes) == 1
    assert dispatcher.answers_given(worker) == 1


def test_a_workers_answer_count_follows_its_answers_stored_at_once_replayed_and_taken_back(racing):
    """The count the quota reads is kept on the worker's row: it must stay the number of answers stored."""
    project, dispatcher, worker, held = racing
    answer_all_at_once(dispatcher, worker, held)
    assert dispatcher.answers_given(worker) == MAX_HELD
    replay = dispatcher.store(NewAnswer(worker, held[0], "no", f"r{held[0]}", 900))
    assert replay.duplicate and dispatcher.answers_given(worker) == MAX_HELD
    dispatcher.undo_last(worker)
    assert dispatcher.answers_given(worker) == MAX_HELD - 1
    following = dispatcher.next_task(worker)  # the question taken back, leased to the worker again
    stored, _ = dispatcher.submit_and_next(NewAnswer(worker, following.task_id, "yes", "after-undo", 900))
    assert stored.answers_given == MAX_HELD
    with project.sessions() as session:
        rows = session.scalar(select(func.count()).select_from(AnswerRow).where(AnswerRow.worker_id == worker))
    assert dispatcher.answers_given(worker) == rows == MAX_HELD
