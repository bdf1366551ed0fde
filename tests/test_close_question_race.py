"""Two neighbouring windows decided "yes" at the same time on PostgreSQL (two server processes).

Their lattices of children overlap, and a shared child is meant to be asked once. Were each
answer's transaction to lock only its own question, then check which children exist and insert the
rest, the second transaction (READ COMMITTED) could not see the first's uncommitted children: it
would insert the same keys, wait on the unique index, and fail with a UniqueViolation, a 500 for
that answer. The same gap would let two last verification answers of one image each see the other
still open, so that neither created the image's patch questions. Closing a question therefore locks
the image row first (``closing.lock_image``), which serializes decisions per image: this test holds
one decision open and checks the other waits for it.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select, text

from crowdpatch.crowd.policies import policy_for
from crowdpatch.crowd.questions import QuestionFacts
from crowdpatch.patches.lattice import WindowKey, children
from crowdpatch.store.models import TaskRow


def configure(config, db_url: str) -> None:
    config.db_url = db_url
    config.crowd.gold_rate = 0.0
    config.patches.presentation = "single"
    config.patches.min_side = 2  # small images still subdivide


def decide_yes(session, project, task_id: int) -> None:
    """Two agreeing "yes" answers to the question, decided by the project's (fixed) policy: it closes."""
    question = QuestionFacts.of(session.get(TaskRow, task_id))
    assert policy_for(project.config).after_answer(session, project.config, question, [(1, "yes"), (2, "yes")]).done


def neighbours_sharing_children(session, image_id: int) -> tuple[TaskRow, TaskRow]:
    windows = session.scalars(
        select(TaskRow).where(TaskRow.image_id == image_id, TaskRow.kind == "patch", TaskRow.level == 1)
    ).all()
    for a in windows:
        for b in windows:
            shared = {str(k) for k in children(WindowKey.parse(a.key))} & {
                str(k) for k in children(WindowKey.parse(b.key))
            }
            if a.id < b.id and shared:
                return a, b
    raise AssertionError("no two level-1 windows share a child")


@pytest.mark.slow
def test_neighbouring_yes_decisions_committed_together_create_each_shared_child_once(postgres_schema, make_project):
    project = make_project(n_images=1, size=64, configure=lambda config: configure(config, postgres_schema))
    with project.sessions.begin() as session:
        verify = session.scalar(select(TaskRow).where(TaskRow.kind == "verify"))
        decide_yes(session, project, verify.id)  # the image's level-1 lattice
    with project.sessions() as session:
        first, second = neighbours_sharing_children(session, verify.image_id)
        first_id, second_id, image_id = first.id, second.id, first.image_id

    holding = project.sessions()
    holding.begin()
    decide_yes(holding, project, first_id)  # children inserted, not committed
    backend: list[int] = []
    failure: list[BaseException] = []

    def decide_second() -> None:
        try:
            with project.sessions.begin() as session:
                backend.append(session.scalar(text("SELECT pg_backend_pid()")))
                decide_yes(session, project, second_id)
        except BaseException as exc:  # noqa: BLE001 - reported to the test's thread
            failure.append(exc)

    racer = threading.Thread(target=decide_second)
    racer.start()
    # Commit the first only once the second is blocked behind it (or already done): the overlap is certain.
    with project.engine.connect() as probe:
        while racer.is_alive():
            if (
                backend
                and probe.scalar(
                    text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": backend[0]}
                )
                == "Lock"
            ):
                break
            time.sleep(0.01)
    holding.commit()
    holding.close()
    racer.join(60)
    assert not failure, repr(failure[0])
    with project.sessions() as session:
        keys = session.scalars(
            select(TaskRow.key).where(TaskRow.image_id == image_id, TaskRow.kind == "patch", TaskRow.level == 2)
        ).all()
    expected = {str(k) for k in children(WindowKey.parse(first.key))} | {
        str(k) for k in children(WindowKey.parse(second.key))
    }
    assert sorted(keys) == sorted(expected)
