"""SQLite under the server: answers that arrive together share a transaction (group commit) and fail alone;
the server's dispatcher decides as the simulator's does; the WAL is checkpointed by a thread."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.crowd.dispatch.memory import MemoryDispatcher, SimulatedClock
from crowdpatch.crowd.dispatch.rules import NotLeased, StoredAnswer
from crowdpatch.server.app import create_app
from crowdpatch.server.platforms import register_worker
from crowdpatch.store.checkpoints import BACKSTOP_PAGES
from crowdpatch.store.models import AnswerRow, ImageRow, LeaseRow, TaskRow
from helpers.loops import run_in_fresh_loop


def no_gold(config) -> None:
    config.crowd.gold_rate = 0.0


def single_windows(config) -> None:
    no_gold(config)
    config.crowd.votes = 1
    config.patches.presentation = "single"


def crowd(project, count: int) -> list[int]:
    return [register_worker(project.sessions, project.id, "local", f"w{i}", {}).id for i in range(count)]


def answers_by_client(project) -> dict[str, int]:
    with project.sessions() as session:
        return {client: task for client, task in session.execute(select(AnswerRow.client_id, AnswerRow.task_id))}


def test_a_refused_call_in_a_group_is_rolled_back_alone_and_the_others_are_committed(make_project):
    project = make_project(n_images=2, size=64, configure=no_gold)
    planner = DatabaseDispatcher(project.sessions, project.id, project.config)
    alice, bob, carol = crowd(project, 3)
    task = planner.next_task(alice)
    results = planner.run_grouped(
        [
            lambda: planner.submit(alice, task.task_id, "yes", client_id="a-1", client_ms=900),
            lambda: planner.submit(bob, task.task_id, "no", client_id="b-1", client_ms=900),  # not leased to bob
            lambda: planner.next_task(carol),
        ]
    )
    stored, refused, handed = results
    assert isinstance(stored, StoredAnswer) and not stored.duplicate
    assert isinstance(refused, NotLeased)
    assert handed is not None and handed.task_id != task.task_id or handed.kind == "verify"
    assert answers_by_client(project) == {"a-1": task.task_id}
    with project.sessions() as session:
        assert session.scalar(select(LeaseRow.task_id).where(LeaseRow.worker_id == carol)) == handed.task_id


def test_a_database_error_in_a_group_reruns_each_call_alone_so_the_others_are_still_stored(make_project):
    project = make_project(n_images=2, size=64, configure=no_gold)
    planner = DatabaseDispatcher(project.sessions, project.id, project.config)
    alice, bob = crowd(project, 2)
    first, second = planner.next_task(alice), planner.next_task(bob)

    def broken() -> None:
        with planner._write() as session:
            session.execute(text("INSERT INTO no_such_table VALUES (1)"))

    results = planner.run_grouped(
        [
            lambda: planner.submit(alice, first.task_id, "yes", client_id="a-1", client_ms=900),
            broken,
            lambda: planner.submit(bob, second.task_id, "no", client_id="b-1", client_ms=900),
        ]
    )
    assert isinstance(results[0], StoredAnswer) and isinstance(results[2], StoredAnswer)
    assert "no_such_table" in str(results[1])
    # Stored once each: the abandoned group left nothing behind, the reruns committed.
    assert answers_by_client(project) == {"a-1": first.task_id, "b-1": second.task_id}


def test_concurrent_answers_through_the_api_share_transactions_and_are_all_stored_once(make_project):
    project = make_project(n_images=4, size=64, configure=no_gold)
    app = create_app(project)
    group_commit = app.state.crowdpatch.dispatcher_calls

    async def rehearse() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            key = {"X-API-Key": project.config.server.effective_api_key()}
            tokens = []
            for i in range(6):
                response = await client.post(
                    f"/api/v1/projects/{project.config.name}/sessions",
                    json={"platform": "simulated", "worker_id": f"s{i}"},
                    headers=key,
                )
                tokens.append({"Authorization": f"Bearer {response.json()['token']}"})
            tasks = await asyncio.gather(*(client.get("/api/v1/tasks/next", headers=auth) for auth in tokens))
            bodies = [
                {
                    "task_id": task.json()["task_id"],
                    "answer": "yes",
                    "client_id": f"c{i}",
                    "client_ms": 1200,
                    "next": True,
                }
                for i, task in enumerate(tasks)
            ]
            # Every answer at once, and the first one twice (a client retrying): the replay gets the stored answer.
            responses = await asyncio.gather(
                *(
                    client.post("/api/v1/answers", json=body, headers=auth)
                    for body, auth in [*zip(bodies, tokens), (bodies[0], tokens[0])]
                )
            )
            assert responses[0].json()["answer_id"] == responses[-1].json()["answer_id"]
            return [response.status_code for response in responses]

    statuses = run_in_fresh_loop(rehearse)
    assert sorted(statuses) == [200] + [201] * 6
    assert group_commit.groups < group_commit.calls  # requests did share transactions
    with project.sessions() as session:
        stored = session.scalars(select(AnswerRow.client_id)).all()
    assert sorted(stored) == [f"c{i}" for i in range(6)]


def answer_everything(
    project, planner: DatabaseDispatcher | MemoryDispatcher, workers: list[int], rounds: int = 400
) -> None:
    """Everyone answers "yes" to verification and to the windows whose corner's x + y is a multiple of 3.

    Some such windows are on every level.
    """
    for step in range(rounds):
        handed = [(worker, planner.next_task(worker)) for worker in workers]
        handed = [(worker, task) for worker, task in handed if task is not None]
        if not handed:
            return
        for worker, task in handed:
            box = task.box
            value = "yes" if task.kind == "verify" or (box.x0 + box.y0) % 3 == 0 else "no"
            planner.submit(
                worker, task.task_id, value, client_id=f"{step}-{worker}", client_ms=1500, time_source="modeled"
            )
    pytest.fail("the questions never ran out")


def question_tree(project) -> list[tuple]:
    """Every question with what was decided about it (the dispatcher's counters aside), and every image's stage."""
    with project.sessions() as session:
        parents = dict(session.execute(select(TaskRow.id, TaskRow.key)).all())
        rows = session.execute(
            select(
                TaskRow.kind,
                TaskRow.key,
                TaskRow.level,
                TaskRow.box,
                TaskRow.parent_id,
                TaskRow.state,
                TaskRow.decision,
                TaskRow.priority,
                TaskRow.votes_wanted,
                TaskRow.reason,
            ).order_by(TaskRow.kind, TaskRow.level, TaskRow.key)
        ).all()
        stages = session.scalars(select(ImageRow.stage)).all()
    return [(*row[:4], parents.get(row[4]), *row[5:]) for row in rows] + [tuple(stages)]


def test_the_server_and_the_simulator_dispatchers_ask_and_decide_the_same(make_project):
    """The same answers through the server's dispatcher and the simulator's: the same questions, closed the same way."""
    served = make_project(
        n_images=1, size=256, configure=single_windows, name="served"
    )  # windows large enough to split
    answer_everything(served, DatabaseDispatcher(served.sessions, served.id, served.config), crowd(served, 2))
    simulated = make_project(n_images=1, size=256, configure=single_windows, name="simulated")
    dispatcher = MemoryDispatcher(
        simulated.sessions, simulated.id, simulated.config, np.random.default_rng(0), SimulatedClock(1.0)
    )
    answer_everything(simulated, dispatcher, crowd(simulated, 2))
    tree = question_tree(served)
    assert tree == question_tree(simulated)
    levels = {row[2] for row in tree[:-1] if row[0] == "patch"}
    assert levels >= {1, 2} and tree[-1] == ("done",), (
        levels,
        len(tree),
    )  # children were created, and everything got decided


def test_a_served_sqlite_database_is_checkpointed_by_a_thread_not_in_the_writers_commits(make_project):
    project = make_project(n_images=2, size=64, configure=no_gold)
    app = create_app(project)
    with TestClient(app) as client:
        checkpointer = app.state.checkpointer
        with project.engine.connect() as connection:  # commits checkpoint only as a backstop now
            assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == BACKSTOP_PAGES
        key = {"X-API-Key": project.config.server.effective_api_key()}
        token = client.post(
            f"/api/v1/projects/{project.config.name}/sessions",
            json={"platform": "simulated", "worker_id": "s"},
            headers=key,
        ).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        task = client.get("/api/v1/tasks/next", headers=auth).json()
        body = {"task_id": task["task_id"], "answer": "yes", "client_id": "c", "client_ms": 900}
        assert client.post("/api/v1/answers", json=body, headers=auth).status_code == 201
        before = checkpointer.checkpoints
        deadline = time.monotonic() + 10 * checkpointer.interval
        while checkpointer.checkpoints == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpointer.checkpoints > before
    assert not checkpointer._thread.is_alive()  # stopped with the server
