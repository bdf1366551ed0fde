"""PostgreSQL group commit: the answers that arrive together at a server process share one transaction.

Each answer must come out as it would alone: refusals and replays answered as such, a question held
by another transaction waited for by that answer only, no next question handed out that the group
itself may close, and nothing the group read beforehand trusted once an answer stops its worker.
"""

from __future__ import annotations

import functools
import threading
import time

from sqlalchemy import select, text

from crowdpatch.crowd.dispatch.database import DatabaseDispatcher, NextTask
from crowdpatch.crowd.dispatch.rules import NewAnswer, NotLeased, StoredAnswer
from crowdpatch.server.platforms import register_worker
from crowdpatch.store.models import AnswerRow, LeaseRow, TaskRow


def on_postgres(url: str, votes: int):
    def configure(config) -> None:
        config.db_url = url
        config.crowd.gold_rate = 0.0
        config.crowd.votes = votes
        config.crowd.early_stop = False
        config.patches.presentation = "single"

    return configure


def crowd(project, count: int) -> list[int]:
    return [register_worker(project.sessions, project.id, "local", f"w{i}", {}).id for i in range(count)]


def answer(planner: DatabaseDispatcher, worker: int, task: int, value: str, client: str, seconds: float = 5.0):
    """A call as the server queues it for ``POST /answers`` with ``"next": true``."""
    return functools.partial(
        planner.submit_and_next, NewAnswer(worker, task, value, client, seconds=seconds), mode="patch", exclude=()
    )


def stored_answers(project) -> dict[str, int]:
    with project.sessions() as session:
        return dict(session.execute(select(AnswerRow.client_id, AnswerRow.task_id)).all())


def task_row(project, task_id: int) -> TaskRow:
    with project.sessions() as session:
        return session.get(TaskRow, task_id)


def test_a_group_answers_each_as_alone_later_answers_refusals_and_replays_included(postgres_schema, make_project):
    project = make_project(n_images=2, configure=on_postgres(postgres_schema, votes=3))
    planner = DatabaseDispatcher(project.sessions, project.id, project.config)
    alice, bob, carol, dan, erin = crowd(project, 5)
    first = planner.next_task(alice).task_id
    assert planner.next_task(bob).task_id == first and planner.next_task(carol).task_id == first
    second = planner.next_task(dan).task_id
    assert second != first

    results = planner.run_grouped(
        [
            answer(planner, alice, first, "yes", "a-1"),
            answer(planner, bob, first, "yes", "b-1"),  # a later answer to the same question
            answer(planner, dan, second, "no", "d-1"),
            answer(planner, erin, second, "yes", "e-1"),  # erin holds no lease on it
            answer(planner, alice, first, "yes", "a-1"),  # alice's client sends it again
            answer(planner, carol, first, "no", "c-1"),  # the third vote: the question closes
        ]
    )

    by_alice, by_bob, by_dan, refused, replayed, by_carol = results
    for result in (by_alice, by_bob, by_dan, replayed, by_carol):
        assert isinstance(result, tuple), result
        assert isinstance(result[0], StoredAnswer) and isinstance(result[1], NextTask)
    assert isinstance(refused, NotLeased)
    assert not by_alice[0].duplicate and replayed[0].duplicate
    assert replayed[0].answer_id == by_alice[0].answer_id
    assert [by_alice[0].task_done, by_bob[0].task_done, by_carol[0].task_done] == [False, False, True]
    assert stored_answers(project) == {"a-1": first, "b-1": first, "d-1": second, "c-1": first}
    assert task_row(project, first).state == "done"
    assert planner.sync_counters() == 0  # every question's counters agree with its rows
    handed = [result[1].assignment.task_id for result in (by_alice, by_bob, by_dan, by_carol) if result[1].assignment]
    assert handed and all(task_row(project, task).state == "open" for task in handed)
    with project.sessions() as session:
        assert session.scalar(select(LeaseRow.id).where(LeaseRow.task_id == first)) is None


def test_an_answer_to_a_question_another_transaction_holds_waits_alone_and_the_group_does_not(
    postgres_schema, make_project
):
    project = make_project(n_images=2, configure=on_postgres(postgres_schema, votes=1))
    planner = DatabaseDispatcher(project.sessions, project.id, project.config)
    alice, bob = crowd(project, 2)
    free, held = planner.next_task(alice).task_id, planner.next_task(bob).task_id
    outcome: list = []
    holder = project.engine.connect()
    holder.begin()
    holder.execute(text("SELECT 1 FROM task WHERE id = :task FOR UPDATE"), {"task": held})
    group = threading.Thread(
        target=lambda: outcome.extend(
            planner.run_grouped([answer(planner, bob, held, "no", "b-1"), answer(planner, alice, free, "yes", "a-1")])
        )
    )
    group.start()
    try:
        deadline = time.monotonic() + 30
        while "a-1" not in stored_answers(project):  # committed by the group while the other question is held
            assert time.monotonic() < deadline, "the group waited for a question another transaction holds"
            time.sleep(0.02)
        assert "b-1" not in stored_answers(project) and group.is_alive()
    finally:
        holder.rollback()
        holder.close()
    group.join(30)
    assert [type(result[0]) for result in outcome] == [StoredAnswer, StoredAnswer]
    assert stored_answers(project) == {"a-1": free, "b-1": held}


def test_a_next_question_handed_out_in_a_group_is_none_of_the_questions_it_answers(postgres_schema, make_project):
    project = make_project(n_images=6, configure=on_postgres(postgres_schema, votes=3))
    planner = DatabaseDispatcher(project.sessions, project.id, project.config)
    alice, walt = crowd(project, 2)
    first = planner.next_task(alice).task_id  # first in queue order, with two slots still free
    with project.sessions() as session:
        other = session.scalar(
            select(TaskRow.id).where(TaskRow.state == "open", TaskRow.kind == "verify", TaskRow.id != first)
        )
    with project.sessions.begin() as session:
        now = time.time()
        session.add(LeaseRow(task_id=other, worker_id=walt, expires_at=now + 600, leased_at=now))
    planner.sync_counters([other])

    results = planner.run_grouped(
        [answer(planner, alice, first, "yes", "a-1"), answer(planner, walt, other, "no", "w-1")]
    )

    following = results[1][1].assignment
    assert following is not None and following.task_id not in (first, other)
    row = task_row(project, first)  # still open with a free slot: alone, walt would have been handed it
    assert row.state == "open" and row.answers_count + row.leases_count < 3


def test_an_answer_that_stops_its_worker_makes_the_group_run_alone_so_its_votes_stop_counting(
    postgres_schema, make_project
):
    def configure(config) -> None:
        on_postgres(postgres_schema, votes=2)(config)
        config.crowd.min_seconds_per_answer = 1.0
        config.crowd.too_fast_min_answers = 2
        config.crowd.too_fast_stop_share = 0.5

    project = make_project(n_images=2, configure=configure)
    planner = DatabaseDispatcher(project.sessions, project.id, project.config)
    zed, alice = crowd(project, 2)
    first = planner.next_task(zed).task_id
    assert not planner.submit(zed, first, "yes", client_id="z-1", seconds=5.0).worker_stopped
    later = planner.next_task(zed).task_id
    assert planner.next_task(alice).task_id == first

    results = planner.run_grouped(
        [
            answer(planner, zed, later, "yes", "z-2", seconds=0.1),  # too fast: zed is stopped
            answer(planner, alice, first, "yes", "a-1"),  # zed's earlier "yes" no longer counts
        ]
    )

    assert results[0][0].worker_stopped and results[0][1].reason == "stopped"
    assert not results[1][0].task_done
    row = task_row(project, first)
    assert (row.state, row.answers_count) == ("open", 1)
    assert planner.sync_counters() == 0


def test_closing_a_question_locks_its_image_but_not_its_key_so_references_to_it_never_wait(
    postgres_schema, make_project
):
    """Migration 0012: ``crowdpatch_close`` locks the image ``FOR NO KEY UPDATE``. A new question's reference to
    its image takes ``FOR KEY SHARE`` on it, which ``FOR UPDATE`` blocked: a group that had inserted a question
    of an image then waited for another group's decision on it, which could be waiting for the first group."""
    from alembic import command

    from crowdpatch.store.db import alembic_config, normalize_url

    project = make_project(n_images=1, configure=on_postgres(postgres_schema, votes=3))
    with project.sessions() as session:
        task = session.scalar(select(TaskRow).where(TaskRow.kind == "verify"))
        task_id, image_id = task.id, task.image_id

    def referenced_while_closing() -> bool:
        """Whether the image can be referenced (``FOR KEY SHARE NOWAIT``) while a decision on it is uncommitted."""
        with project.engine.connect() as closing, project.engine.connect() as other:
            closing.execute(
                text("SELECT crowdpatch_close(:task, :image, 'yes', ARRAY[]::text[])"),
                {"task": task_id, "image": image_id},
            )
            try:
                other.execute(text("SELECT 1 FROM image WHERE id = :image FOR KEY SHARE NOWAIT"), {"image": image_id})
                return True
            except Exception as exc:  # noqa: BLE001 - the lock is held: psycopg's LockNotAvailable
                assert "could not obtain lock" in str(exc)
                return False
            finally:
                closing.rollback()

    assert referenced_while_closing()
    project.engine.dispose()
    command.downgrade(alembic_config(normalize_url(postgres_schema)), "0011")
    assert not referenced_while_closing()
    command.upgrade(alembic_config(normalize_url(postgres_schema)), "head")
    assert referenced_while_closing()
