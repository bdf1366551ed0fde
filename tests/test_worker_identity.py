"""Who a worker session answers as, and for which project: through the real ASGI app.

A platform id alone names no one (anyone can type it): only the platform's evidence (Prolific's
SESSION_ID, MTurk's assignmentId, a local invite) ties a session to a worker who already answered.
Tokens, invites and image links are bound to their project's random uid, never to its row id.
"""

from __future__ import annotations

import json

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text

from crowdpatch.server.app import create_app
from crowdpatch.server.platforms import register_worker
from crowdpatch.server.tokens import make_invite
from crowdpatch.store import open_database
from crowdpatch.store.db import alembic_config
from crowdpatch.store.models import AnswerRow, ProjectRow, TaskRow, WorkerRow
from helpers.old_rows import add_open_task, add_project_and_image

VICTIM = "5f0c1e2d3b4a59687766a1b2"
"""A Prolific participant id: 24 hex digits, shown to anyone the participant messages or shares a screen with."""


def small_session(config) -> None:
    config.server.answers_per_session = 50
    config.crowd.gold_rate = 0.0
    config.crowd.too_fast_min_answers = 4


@pytest.fixture
def served(make_project):
    project = make_project(n_images=6, size=64, configure=small_session)
    with TestClient(create_app(project)) as client:
        yield project, client


def arrive(client, project, status: int = 201, **body) -> dict:
    """``POST /sessions`` with ``body``; the response's JSON, with the bearer header under "auth"."""
    response = client.post(f"/api/v1/projects/{project.config.name}/sessions", json=body)
    assert response.status_code == status, response.text
    reply = response.json()
    if status == 201:
        reply["auth"] = {"Authorization": f"Bearer {reply['token']}"}
    return reply


def answer_next(client, auth, value: str, client_id: str, client_ms: int):
    task = client.get("/api/v1/tasks/next", headers=auth)
    assert task.status_code == 200, task.text
    body = {"task_id": task.json()["task_id"], "answer": value, "client_id": client_id, "client_ms": client_ms}
    return client.post("/api/v1/answers", json=body, headers=auth)


def workers_named(project, external_id: str) -> list[WorkerRow]:
    with project.sessions() as session:
        return list(
            session.scalars(select(WorkerRow).where(WorkerRow.external_id == external_id).order_by(WorkerRow.id))
        )


def answers_of(project, worker_id: int) -> list[AnswerRow]:
    with project.sessions() as session:
        return list(session.scalars(select(AnswerRow).where(AnswerRow.worker_id == worker_id).order_by(AnswerRow.id)))


# -- a worker id without the platform's evidence ---------------------------------------------------


@pytest.mark.parametrize("impostor_session", [None, "S-guessed"])
def test_an_impostor_under_a_workers_id_cannot_undo_or_complete_for_it(served, impostor_session):
    project, client = served
    project.config.server.complete_without_answers = True  # the impostor, with no answer, may complete its own
    victim = arrive(client, project, platform="prolific", worker_id=VICTIM, study_id="st", session_id="S-victim")
    assert answer_next(client, victim["auth"], "no", "v-1", 2500).status_code == 201
    impostor = arrive(
        client, project, platform="prolific", worker_id=VICTIM, study_id="st", session_id=impostor_session
    )
    assert impostor["answers_given"] == 0  # not the victim's count: another worker

    undo = client.post("/api/v1/answers/undo", headers=impostor["auth"])
    assert undo.status_code == 409 and undo.json()["detail"] == "nothing to undo"
    assert client.post("/api/v1/sessions/complete", headers=impostor["auth"]).status_code == 200

    victim_row = workers_named(project, VICTIM)[0]
    assert victim_row.finished_at is None and [a.client_id for a in answers_of(project, victim_row.id)] == ["v-1"]
    # The victim goes on: takes back its own answer, answers again, and completes.
    assert client.post("/api/v1/answers/undo", headers=victim["auth"]).status_code == 200
    assert answer_next(client, victim["auth"], "no", "v-2", 2500).status_code == 201
    done = client.post("/api/v1/sessions/complete", headers=victim["auth"])
    assert done.status_code == 200 and done.json()["code"] == project.config.server.prolific_completion_code


def test_an_impostors_too_fast_answers_stop_only_the_impostor_and_the_victim_keeps_its_answers(served):
    project, client = served
    victim = arrive(client, project, platform="prolific", worker_id=VICTIM, study_id="st", session_id="S-victim")
    for i in range(3):
        assert answer_next(client, victim["auth"], "no", f"v-{i}", 2500).status_code == 201
    impostor = arrive(client, project, platform="prolific", worker_id=VICTIM, study_id="st")
    stopped = False
    for i in range(14):
        posted = answer_next(client, impostor["auth"], "yes", f"x-{i}", 0)
        assert posted.status_code == 201
        if posted.json()["worker_stopped"]:
            stopped = True
            break
    assert stopped
    refused = client.get("/api/v1/tasks/next", headers=impostor["auth"])
    assert refused.status_code == 403 and refused.json()["reason"] == "stopped"

    victim_row, impostor_row = workers_named(project, VICTIM)
    assert (impostor_row.banned, impostor_row.stopped_reason) == (True, "too_fast")
    assert not victim_row.banned and victim_row.stopped_reason is None
    # The victim's answers are kept and still count toward their questions; the impostor's no longer do.
    kept = answers_of(project, victim_row.id)
    assert [a.client_id for a in kept] == ["v-0", "v-1", "v-2"]
    with project.sessions() as session:
        for answer in kept:
            counted = session.scalar(select(TaskRow.answers_count).where(TaskRow.id == answer.task_id))
            assert counted == 1
    # It goes on answering, also from its link opened again (the same evidence: the same worker).
    assert answer_next(client, victim["auth"], "no", "v-3", 2500).status_code == 201
    again = arrive(client, project, platform="prolific", worker_id=VICTIM, study_id="st", session_id="S-victim")
    assert again["answers_given"] == 4
    assert client.get("/api/v1/tasks/next", headers=again["auth"]).status_code == 200


# -- the platform's evidence ties sessions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "evidence", "other_evidence"),
    [
        ("prolific", {"session_id": "S-1"}, {"session_id": "S-2"}),
        ("mturk", {"assignment_id": "A-1", "hit_id": "H"}, {"assignment_id": "A-2", "hit_id": "H"}),
        ("local", {"invite": "alice"}, {"invite": "bob"}),
    ],
)
def test_sessions_with_the_same_platform_evidence_are_one_worker(served, platform, evidence, other_evidence):
    project, client = served
    if platform == "local":
        sign = lambda body: {"invite": make_invite(project.config.server.invite_secret, project.uid, body["invite"])}  # noqa: E731
        evidence, other_evidence = sign(evidence), sign(other_evidence)
    first = arrive(client, project, platform=platform, worker_id="W1", **evidence)
    assert answer_next(client, first["auth"], "no", "a-1", 10).status_code == 201
    assert answer_next(client, first["auth"], "no", "a-2", 10).status_code == 201
    second = arrive(client, project, platform=platform, worker_id="W1", **evidence)
    assert second["answers_given"] == 2
    # One worker: the second session is never handed what the first answered ...
    answered = {a.task_id for a in answers_of(project, workers_named(project, "W1")[0].id)}
    assert int(client.get("/api/v1/tasks/next", headers=second["auth"]).json()["task_id"]) not in answered
    # ... yet takes back only what it answered itself.
    assert client.post("/api/v1/answers/undo", headers=second["auth"]).status_code == 409
    # Quality control counts both sessions' answers together: 4 too-fast answers stop the worker.
    assert answer_next(client, second["auth"], "no", "a-3", 10).status_code == 201
    assert answer_next(client, second["auth"], "no", "a-4", 10).json()["worker_stopped"]
    assert client.get("/api/v1/tasks/next", headers=first["auth"]).status_code == 403
    # Other evidence under the same id is another worker, not stopped.
    other = arrive(client, project, platform=platform, worker_id="W1", **other_evidence)
    assert other["answers_given"] == 0
    assert client.get("/api/v1/tasks/next", headers=other["auth"]).status_code == 200
    assert [w.banned for w in workers_named(project, "W1")] == [True, False]


# -- tokens and invites belong to one project ---------------------------------------------------------


def same_secrets_as(first):
    def configure(config) -> None:
        small_session(config)
        config.server.session_secret = first.config.server.session_secret
        config.server.invite_secret = first.config.server.invite_secret

    return configure


def test_a_token_of_one_sqlite_project_is_refused_by_another_sharing_its_secrets(make_project):
    first = make_project(n_images=2, size=64, configure=small_session, name="first")
    second = make_project(n_images=2, size=64, configure=same_secrets_as(first), name="second")
    assert first.id == second.id == 1 and first.uid != second.uid
    with TestClient(create_app(first)) as client:
        worker = arrive(client, first, platform="prolific", worker_id="P", session_id="S")
        task = client.get("/api/v1/tasks/next", headers=worker["auth"]).json()
    with TestClient(create_app(second)) as client:
        foreign = client.get("/api/v1/tasks/next", headers=worker["auth"])
        assert foreign.status_code == 401 and foreign.json()["reason"] == "session_invalid"
        body = {"task_id": task["task_id"], "answer": "yes", "client_id": "f-1", "client_ms": 900}
        assert client.post("/api/v1/answers", json=body, headers=worker["auth"]).status_code == 401
        assert client.post("/api/v1/answers/undo", headers=worker["auth"]).status_code == 401
        assert client.post("/api/v1/sessions/complete", headers=worker["auth"]).status_code == 401
    with second.sessions() as session:
        assert session.scalar(select(func.count()).select_from(AnswerRow)) == 0


def test_an_invite_of_one_project_is_refused_by_another_in_one_postgresql_database(make_project, postgres_schema):
    def first_config(config) -> None:
        small_session(config)
        config.db_url = postgres_schema

    first = make_project(n_images=2, size=64, configure=first_config, name="first")

    def second_config(config) -> None:
        same_secrets_as(first)(config)
        config.db_url = postgres_schema

    second = make_project(n_images=2, size=64, configure=second_config, name="second")
    invite = make_invite(first.config.server.invite_secret, first.uid, "lab")
    with TestClient(create_app(second)) as client:
        refused = arrive(client, second, 403, platform="local", worker_id="w", invite=invite)
        assert refused["reason"] == "invite_needed"
    with TestClient(create_app(first)) as client:
        worker = arrive(client, first, platform="local", worker_id="w", invite=invite)
    with TestClient(create_app(second)) as client:
        assert client.get("/api/v1/tasks/next", headers=worker["auth"]).status_code == 401
    with second.sessions() as session:
        assert session.scalar(select(func.count()).select_from(WorkerRow).where(WorkerRow.project_id == second.id)) == 0


# -- a study in progress keeps its workers across the upgrade ------------------------------------------


def test_an_older_database_gives_each_project_a_uid_and_keeps_its_workers_evidence(tmp_path):
    """Revision 0005 stored no evidence: each worker's is taken from the attributes it arrived with."""
    uids = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / f'{name}.db'}"
        command.upgrade(alembic_config(url), "0005")
        engine = create_engine(url)
        with engine.begin() as c:
            add_project_and_image(c)
            add_open_task(c)
            c.execute(
                text(
                    "INSERT INTO worker (id, project_id, platform, external_id, attributes, gold_seen, gold_correct,"
                    " too_fast, banned, created_at)"
                    " VALUES (1, 1, 'prolific', 'P', :attributes, 0, 0, 0, 0, '2026-01-01')"
                ),
                {"attributes": json.dumps({"study_id": "st", "session_id": "S-1"})},
            )
            c.execute(
                text(
                    "INSERT INTO answer (id, task_id, worker_id, value, client_id, shown_at, answered_at, seconds,"
                    " time_source) VALUES (1, 1, 1, '\"yes\"', 'c-1', 0, 1, 1, 'measured')"
                )
            )
        engine.dispose()
        engine, sessions = open_database(url)  # the server's way: foreign keys on, migrations to the newest
        with sessions() as session:
            uids.append(session.scalar(select(ProjectRow.uid)))
        assert register_worker(sessions, 1, "prolific", "P", {"session_id": "S-1"}, "S-1").id == 1
        assert register_worker(sessions, 1, "prolific", "P", {}, None).id != 1
        with sessions() as session:
            assert session.scalar(select(AnswerRow.worker_id).where(AnswerRow.client_id == "c-1")) == 1
        engine.dispose()
    assert all(uids) and uids[0] != uids[1]
