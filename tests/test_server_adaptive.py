"""The adaptive planner served to real workers: the same leases, quality control and JSON API.

Workers answer through the real ASGI app (FastAPI's TestClient), several holding questions at once,
so the next question often depends on answers still in flight from others.
"""

from __future__ import annotations

from collections import Counter
from itertools import count

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from crowdpatch.boxes import Box
from crowdpatch.crowd.dispatch.rules import Assignment
from crowdpatch.server.app import create_app
from crowdpatch.simulate.run import _Oracles, simulated_answer
from crowdpatch.simulate.workers import SimulatedWorker
from crowdpatch.store.models import AnswerRow, ImageRow, TaskRow
from helpers.sessions import open_session

_ids = count()


def adaptive_server(config) -> None:
    config.crowd.planner = "adaptive"
    config.crowd.gold_rate = 0.0
    config.server.answers_per_session = 10_000
    config.server.rate_limit_worker_per_second = 0  # answering at machine speed
    config.server.rate_limit_ip_per_second = 0


def as_assignment(task: dict) -> Assignment:
    return Assignment(
        task_id=int(task["task_id"]),
        kind=task["kind"],
        image_id=task["image_id"],
        box=Box.from_list(task["box"]),
        grid_size=task.get("grid_size"),
        question=task["question"],
        lease_expires_at=0.0,
        variant=task.get("variant"),
        active_cells=tuple(task["active_cells"]) if task.get("active_cells") is not None else None,
    )


def test_adaptive_questions_are_served_answered_and_never_over_asked(make_project):
    project = make_project(n_images=6, size=64, configure=adaptive_server)
    oracles = _Oracles(project)
    rng = np.random.default_rng(0)
    honest = SimulatedWorker("x", "honest", threshold=0.2, error_rate=0.0, speed=1.0)
    seen: Counter[str] = Counter()
    rounds_checked = False
    with TestClient(create_app(project)) as client:
        crowd = [open_session(client, project, f"w{i}") for i in range(6)]
        # Each worker takes a question before anyone answers: decisions meet answers in flight.
        while True:
            taken = []
            for auth in crowd:
                response = client.get("/api/v1/tasks/next", headers=auth)
                if response.status_code == 200:
                    taken.append((auth, response.json()))
            if not taken:
                break
            for auth, task in taken:
                assignment = as_assignment(task)
                seen[
                    "outline"
                    if task.get("variant") == "outline"
                    else task["kind"] + (" round" if task.get("active_cells") else "")
                ] += 1
                if task.get("variant") == "outline":
                    image = client.get(task["image_url"])
                    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
                    assert "outline" in task["question"]
                if task.get("active_cells") and not rounds_checked:
                    locked = sorted(set(range(task["grid_size"] ** 2)) - set(task["active_cells"]))
                    if locked:
                        bad = {
                            "task_id": task["task_id"],
                            "answer": {"cells": [locked[0]]},
                            "client_id": f"bad{next(_ids)}",
                            "client_ms": 900,
                        }
                        refused = client.post("/api/v1/answers", json=bad, headers=auth)
                        assert refused.status_code == 422 and "not shown" in refused.text
                        rounds_checked = True
                value, seconds = simulated_answer(assignment, honest, oracles, project, rng)
                body = {
                    "task_id": task["task_id"],
                    "answer": value,
                    "client_id": f"c{next(_ids)}",
                    "client_ms": int(seconds * 1000),
                }
                stored = client.post("/api/v1/answers", json=body, headers=auth)
                assert stored.status_code == 201, stored.text
    assert seen["verify"] and seen["grid"] and seen["outline"] and seen["grid round"], seen
    assert rounds_checked
    with project.sessions() as session:
        stages = Counter(session.scalars(select(ImageRow.stage).where(ImageRow.project_id == project.id)))
        assert stages == {"done": 6}, stages
        answers = dict(session.execute(select(AnswerRow.task_id, func.count()).group_by(AnswerRow.task_id)).all())
        for task in session.scalars(select(TaskRow).where(TaskRow.project_id == project.id)):
            assert task.state == "done"
            # Every answer was wanted when it was asked for: never more than the question's final want.
            assert answers.get(task.id, 0) <= task.votes_wanted, (task.kind, task.reason)
            assert task.reason
