"""The PostgreSQL answer path's transaction: statements on a connection, the ORM session only when asked for,
and the JSON it reads parsed without losing anything."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from crowdpatch.crowd.closing import mark_done
from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.crowd.dispatch.rules import NewAnswer
from crowdpatch.crowd.kinds import NO, VERIFY
from crowdpatch.crowd.questions import QuestionFacts
from crowdpatch.server.platforms import register_worker
from crowdpatch.store.connection_session import connection_transaction
from crowdpatch.store.models import ProjectRow, TaskRow, WorkerRow
from crowdpatch.store.sql import Statement

COUNT_WORKERS = Statement("SELECT count(*) AS n FROM worker", columns={"n": None})
RENAME_PROJECT = Statement("UPDATE project SET name = :name WHERE id = :project")


def on(database):
    """A project configuration on ``database`` (None: SQLite), with no gold questions mixed in."""

    def configure(config) -> None:
        config.db_url = database
        config.crowd.gold_rate = 0.0

    return configure


def project_name(project) -> str:
    with project.sessions() as session:
        return session.scalar(select(ProjectRow.name).where(ProjectRow.id == project.id))


def worker_count(project) -> int:
    with project.sessions() as session:
        return session.scalar(select(func.count()).select_from(WorkerRow))


def test_statements_alone_make_no_orm_session_and_are_committed(make_project, database):
    project = make_project(n_images=2, configure=on(database))
    with connection_transaction(project.sessions) as transaction:
        RENAME_PROJECT.run(transaction, name="renamed", project=project.id)
        assert COUNT_WORKERS.scalar(transaction) == 0
        assert transaction.orm is None
    assert project_name(project) == "renamed"


def test_orm_work_joins_the_statements_transaction_and_is_flushed_before_the_commit(make_project, database):
    project = make_project(n_images=2, configure=on(database))
    with connection_transaction(project.sessions) as transaction:
        RENAME_PROJECT.run(transaction, name="renamed", project=project.id)
        transaction.add(WorkerRow(project_id=project.id, platform="local", external_id="w1"))
        assert transaction.orm is not None
        # Added, not flushed: the commit flushes it.
    assert project_name(project) == "renamed"
    assert worker_count(project) == 1


def test_a_block_that_raises_stores_neither_its_statements_nor_its_orm_work(make_project, database):
    project = make_project(n_images=2, configure=on(database))
    before = project_name(project)
    with pytest.raises(RuntimeError), connection_transaction(project.sessions) as transaction:
        RENAME_PROJECT.run(transaction, name="renamed", project=project.id)
        transaction.add(WorkerRow(project_id=project.id, platform="local", external_id="w1"))
        transaction.flush()
        raise RuntimeError("the answer was refused")
    assert project_name(project) == before
    assert worker_count(project) == 0


def test_closing_a_question_runs_on_statements_alone(make_project, database):
    """Closing keeps the rows an ORM session has loaded in step; with none loaded it must not make one."""
    project = make_project(n_images=2, configure=on(database))
    with project.sessions() as session:
        row = session.scalars(select(TaskRow).where(TaskRow.kind == VERIFY).order_by(TaskRow.id)).first()
        question = QuestionFacts.of(row)
    with connection_transaction(project.sessions) as transaction:
        mark_done(transaction, question, NO)
        assert transaction.orm is None
    with project.sessions() as session:
        assert (session.get(TaskRow, question.id).state, session.get(TaskRow, question.id).decision) == ("done", NO)


@pytest.mark.parametrize(
    "attributes",
    [{"panel_id": 123456789012345678901234567890, "age": 31, "weights": [0.5, 1]}, {"note": "\ud800 kept", "age": 31}],
    ids=["integer-past-64-bits", "lone-surrogate"],
)
def test_a_workers_attributes_survive_its_answers_on_postgresql_as_given(make_project, postgres_schema, attributes):
    """Each answer reads the worker's row as JSON and writes its attributes back: a number past 64 bits, which a
    fast JSON parser reads as a float, and an escape it refuses must come back as they were given."""
    project = make_project(n_images=4, configure=on(postgres_schema))
    worker = register_worker(project.sessions, project.id, "local", "w1", attributes).id
    dispatcher = DatabaseDispatcher(project.sessions, project.id, project.config)
    task = dispatcher.next_task(worker)
    for turn in range(3):
        _, following = dispatcher.submit_and_next(NewAnswer(worker, task.task_id, "yes", f"c{turn}"))
        task = following.assignment
    with project.sessions() as session:
        row = session.get(WorkerRow, worker)
        assert row.answers_given == 3
        assert {name: row.attributes[name] for name in attributes} == attributes  # beside the quality rules' own
        assert all(type(row.attributes[name]) is type(value) for name, value in attributes.items())
