"""The server's planner: its task-row counters, expired leases handed on, late answers, sweeps, migration 0003."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, func, inspect, select, text

from crowdpatch.crowd.dispatch import statements as sql
from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.crowd.dispatch.rules import NewAnswer, NotLeased, TooManyHeld, WorkerStopped
from crowdpatch.crowd.votes import votes_target
from crowdpatch.server.platforms import register_worker
from crowdpatch.store.db import (
    POSTGRES_TRANSACTIONS_AT_ONCE,
    alembic_config,
    make_engine,
    normalize_url,
    refresh_planner_statistics,
)
from crowdpatch.store.models import AnswerRow, LeaseRow, TaskRow, WorkerRow
from helpers.clock import Clock
from helpers.old_rows import add_open_task, add_project_and_image
from helpers.postgres import fresh_schema


def one_vote(config) -> None:
    config.crowd.votes = 1
    config.crowd.gold_rate = 0.0


def no_gold(config) -> None:
    config.crowd.gold_rate = 0.0


def workers(project, count: int) -> list[int]:
    return [register_worker(project.sessions, project.id, "local", f"w{i}", {}).id for i in range(count)]


def true_counts(project) -> dict[int, tuple[int, int]]:
    """Open question id -> (answers of workers not stopped, lease rows), counted from the rows."""
    with project.sessions() as session:
        banned = set(session.scalars(select(WorkerRow.id).where(WorkerRow.banned)))
        answers = Counter(
            t for t, w in session.execute(select(AnswerRow.task_id, AnswerRow.worker_id)) if w not in banned
        )
        leases = Counter(session.scalars(select(LeaseRow.task_id)))
        return {t: (answers[t], leases[t]) for t in session.scalars(select(TaskRow.id).where(TaskRow.state == "open"))}


def stored_counts(project) -> dict[int, tuple[int, int]]:
    with project.sessions() as session:
        rows = session.execute(
            select(TaskRow.id, TaskRow.answers_count, TaskRow.leases_count).where(TaskRow.state == "open")
        )
        return {task_id: (answers, leases) for task_id, answers, leases in rows}


def assert_never_over_asked(project) -> None:
    """No question (gold aside) has more answers than its counting rule wants for the answers it has."""
    with project.sessions() as session:
        for task in session.scalars(select(TaskRow).where(TaskRow.kind != "gold")):
            values = list(
                session.scalars(select(AnswerRow.value).where(AnswerRow.task_id == task.id).order_by(AnswerRow.id))
            )
            assert len(values) <= votes_target(values, task.votes_wanted, True), task.id


def without(ids: set[int], counts: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
    return {task_id: count for task_id, count in counts.items() if task_id not in ids}


def test_counters_stay_equal_to_the_rows_while_a_crowd_answers_late_and_abandons_leases(make_project):
    project = make_project(n_images=4, size=64, configure=no_gold)
    clock = Clock()
    planner = DatabaseDispatcher(project.sessions, project.id, project.config, clock=clock, rng=random.Random(0))
    crowd = workers(project, 12)
    rng = random.Random(1)
    held: list[tuple[int, int, str]] = []
    refused = 0
    for step in range(400):
        clock.now += rng.expovariate(1.0) * project.config.crowd.lease_seconds / 10
        worker = rng.choice(crowd)
        if held and rng.random() < 0.6:
            owner, task_id, kind = held.pop(rng.randrange(len(held)))
            if rng.random() < 0.15:
                continue  # abandoned: the lease expires and its slot is handed on
            try:
                value = {"cells": [rng.randrange(4)]} if kind == "grid" else rng.choice(["yes", "no"])
                planner.submit(owner, task_id, value, client_id=f"c{step}", client_ms=1500)
            except NotLeased:
                refused += 1
            continue
        try:
            assignment = planner.next_task(worker)
        except TooManyHeld:
            continue
        if assignment is not None:
            held.append((worker, assignment.task_id, assignment.kind))
        assert stored_counts(project) == true_counts(project)
    assert stored_counts(project) == true_counts(project)
    assert planner.sync_counters() == 0
    assert_never_over_asked(project)
    assert refused > 0, "some leases should have been handed on before their late answer came"


@pytest.mark.parametrize("gold_rate", [0.0, 0.3])
def test_answers_with_their_next_question_keep_leases_counters_and_votes_true_on_both_backends(
    make_project, database, gold_rate
):
    """A crowd that answers with ``"next": true``, some workers holding a second question, some leases left
    to expire: each next question is this worker's live lease on a question it has not answered, and
    the counters, the leases and the answers per question stay what the rows say (PostgreSQL leases
    the next question in the statement that stores the answer whenever it can)."""
    from crowdpatch.crowd.dispatch.rules import NewAnswer

    def configure(config) -> None:
        config.db_url = database
        config.crowd.gold_rate = gold_rate

    project = make_project(n_images=12, size=64, configure=configure)
    clock = Clock()
    planner = DatabaseDispatcher(project.sessions, project.id, project.config, clock=clock, rng=random.Random(2))
    crowd = workers(project, 8)
    rng = random.Random(3)
    held: dict[int, list] = {worker: [] for worker in crowd}
    handed = refused = 0
    with project.sessions() as session:  # their counters are never read: who has seen one is what counts
        gold = set(session.scalars(select(TaskRow.id).where(TaskRow.kind == "gold")))
    for step in range(240):
        clock.now += rng.expovariate(1.0) * project.config.crowd.lease_seconds / 8
        worker = rng.choice(crowd)
        try:
            if not held[worker] or (len(held[worker]) == 1 and rng.random() < 0.25):  # a prefetch
                shown = tuple(task.task_id for task in held[worker])
                assignment = planner.next_task(worker, exclude=shown)
                held[worker] += [assignment] if assignment is not None else []
                continue
        except TooManyHeld:
            continue
        except WorkerStopped:  # failed its gold questions: random answers do
            crowd.remove(worker)
            continue
        task = held[worker].pop(0)
        value = {"cells": [rng.randrange(4)]} if task.kind == "grid" else rng.choice(["yes", "no"])
        with project.sessions() as session:
            also_held = set(
                session.scalars(
                    select(LeaseRow.task_id).where(
                        LeaseRow.worker_id == worker, LeaseRow.task_id != task.task_id, LeaseRow.expires_at > clock.now
                    )
                )
            )
        try:
            stored, following = planner.submit_and_next(NewAnswer(worker, task.task_id, value, f"c{step}", 900))
        except NotLeased:
            refused += 1
            continue
        if following.assignment is not None:
            handed += 1
            following_id = following.assignment.task_id
            assert not also_held or following_id in also_held, "a question the worker holds comes back first"
            with project.sessions() as session:
                assert session.scalar(
                    select(LeaseRow.id).where(LeaseRow.task_id == following_id, LeaseRow.worker_id == worker)
                ), "the next question is leased to the worker it is handed to"
                assert not session.scalar(
                    select(AnswerRow.id).where(AnswerRow.task_id == following_id, AnswerRow.worker_id == worker)
                ), "never a question the worker answered"
            held[worker] = [t for t in held[worker] if t.task_id != following_id] + [following.assignment]
        with project.sessions() as session:
            leased = set(session.scalars(select(LeaseRow.task_id).where(LeaseRow.worker_id == worker)))
        assert leased <= {t.task_id for t in held[worker]}, "no question leased that the worker was not handed"
        assert without(gold, stored_counts(project)) == without(gold, true_counts(project))
    assert handed > 50 and refused > 0
    assert planner.sync_counters() == 0
    assert_never_over_asked(project)


def test_a_late_answer_counts_while_nobody_took_its_place(make_project):
    project = make_project(n_images=2, size=64, configure=one_vote)
    clock = Clock()
    planner = DatabaseDispatcher(project.sessions, project.id, project.config, clock=clock)
    alice, _ = workers(project, 2)
    task = planner.next_task(alice)
    clock.now += 10 * project.config.crowd.lease_seconds
    stored = planner.submit(alice, task.task_id, "yes", client_id="late", client_ms=900)
    assert not stored.duplicate and stored.task_done


def test_an_expired_lease_is_handed_on_and_then_its_late_answer_is_refused(make_project):
    project = make_project(n_images=2, size=64, configure=one_vote)
    clock = Clock()
    planner = DatabaseDispatcher(project.sessions, project.id, project.config, clock=clock)
    alice, bob = workers(project, 2)
    first = planner.next_task(alice)
    assert planner.next_task(bob).task_id != first.task_id, "a live lease holds its slot"
    clock.now += project.config.crowd.lease_seconds + 1
    # Overdue work goes first: bob gets alice's question, and her expired lease row is gone.
    assert planner.next_task(bob).task_id == first.task_id
    with project.sessions() as session:
        holders = set(session.scalars(select(LeaseRow.worker_id).where(LeaseRow.task_id == first.task_id)))
    assert holders == {bob}
    with pytest.raises(NotLeased):
        planner.submit(alice, first.task_id, "no", client_id="too-late", client_ms=900)
    planner.submit(bob, first.task_id, "yes", client_id="bob", client_ms=900)
    with project.sessions() as session:
        assert session.scalars(select(AnswerRow.worker_id).where(AnswerRow.task_id == first.task_id)).all() == [bob]


def test_leases_left_on_closed_questions_are_swept_after_a_lease_period(make_project):
    project = make_project(n_images=2, size=64, configure=one_vote)
    clock = Clock()
    planner = DatabaseDispatcher(project.sessions, project.id, project.config, clock=clock)
    alice, bob = workers(project, 2)
    task = planner.next_task(alice)
    planner.submit(alice, task.task_id, "yes", client_id="a", client_ms=900)
    # Another writer left a lease on the closed question (the in-process simulator keeps its own).
    with project.sessions.begin() as session:
        session.add(LeaseRow(task_id=task.task_id, worker_id=bob, expires_at=clock.now + 5, leased_at=clock.now))
    lease_seconds = project.config.crowd.lease_seconds
    clock.now += lease_seconds  # expired, but not a lease period ago: kept
    planner.next_task(alice)
    with project.sessions() as session:
        assert session.scalar(select(LeaseRow.id).where(LeaseRow.task_id == task.task_id)) is not None
    clock.now += lease_seconds
    planner.next_task(alice)
    with project.sessions() as session:
        assert session.scalar(select(LeaseRow.id).where(LeaseRow.task_id == task.task_id)) is None


@pytest.mark.parametrize(("values", "disagree"), [(("yes", "no"), True), (("no", "no"), False)])
def test_answers_stored_by_another_writer_are_counted_when_the_planner_starts(make_project, database, values, disagree):
    def configure(config) -> None:
        no_gold(config)
        config.db_url = database

    project = make_project(n_images=2, size=64, configure=configure)
    alice, bob = workers(project, 2)
    with project.sessions.begin() as session:
        task_id = session.scalar(select(TaskRow.id).where(TaskRow.kind == "verify").order_by(TaskRow.id).limit(1))
        for worker, value in zip((alice, bob), values):
            session.add(
                AnswerRow(
                    task_id=task_id,
                    worker_id=worker,
                    value=value,
                    client_id=f"x{worker}",
                    shown_at=0.0,
                    answered_at=1.0,
                    client_ms=900,
                    seconds=0.9,
                    time_source="measured",
                )
            )
    DatabaseDispatcher(project.sessions, project.id, project.config)
    with project.sessions() as session:
        task = session.get(TaskRow, task_id)
        assert (task.answers_count, task.leases_count, task.answers_disagree) == (2, 0, disagree)


def test_on_postgresql_counters_of_more_questions_than_a_statement_can_name_are_all_fixed_at_start(
    make_project, postgres_schema
):
    """A study simulated in process (no counters kept) and then served has every open question to fix: past
    65,535 of them one statement cannot name them all (PostgreSQL's cap on parameters), and serving failed."""

    def configure(config) -> None:
        no_gold(config)
        config.db_url = postgres_schema

    project = make_project(n_images=1, size=64, configure=configure)
    with project.sessions.begin() as session:
        image_id = session.scalar(select(TaskRow.image_id).limit(1))
        session.execute(
            text(
                "INSERT INTO task (project_id, image_id, kind, key, level, box, votes_wanted, state, reason,"
                " created_at, priority, answers_count) SELECT :project, :image, 'patch', 'bulk-' || n, 9,"
                " '[0, 0, 1, 1]', 3, 'open', '', now(), 1, 1 FROM generate_series(1, 70000) AS n"
            ),
            {"project": project.id, "image": image_id},
        )
    DatabaseDispatcher(project.sessions, project.id, project.config)
    with project.sessions() as session:
        still_wrong = session.scalar(
            select(func.count()).select_from(TaskRow).where(TaskRow.key.like("bulk-%"), TaskRow.answers_count != 0)
        )
    assert still_wrong == 0


def test_a_stopped_workers_answers_stop_counting_and_its_leases_free_their_slots(make_project):
    def strict(config) -> None:
        no_gold(config)
        config.crowd.min_seconds_per_answer = 1.0
        config.crowd.too_fast_min_answers = 1
        config.crowd.too_fast_stop_share = 0.5

    project = make_project(n_images=2, size=64, configure=strict)
    planner = DatabaseDispatcher(project.sessions, project.id, project.config)
    (hasty,) = workers(project, 1)
    first = planner.next_task(hasty)
    second = planner.next_task(hasty, exclude=(first.task_id,))
    stored = planner.submit(hasty, first.task_id, "yes", client_id="fast", client_ms=50)
    assert stored.worker_stopped
    with project.sessions() as session:
        rows = {
            t.id: (t.answers_count, t.leases_count)
            for t in session.scalars(select(TaskRow).where(TaskRow.id.in_([first.task_id, second.task_id])))
        }
        assert session.scalar(select(LeaseRow.id).where(LeaseRow.worker_id == hasty)) is None
    assert rows == {first.task_id: (0, 0), second.task_id: (0, 0)}
    assert stored_counts(project) == true_counts(project)


def test_the_hand_out_query_walks_the_open_question_index_without_sorting(make_project):
    project = make_project(n_images=2, size=64, configure=no_gold)
    planner = DatabaseDispatcher(project.sessions, project.id, project.config)
    pick = planner.hand_out["patch"].pick[0].compiled(project.engine.dialect)
    with project.engine.connect() as connection:
        rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + pick.sql, pick.bound({"project": 1, "worker": 1}))
        plan = " ".join(str(row[-1]) for row in rows)
    assert "ix_task_queue" in plan and "TEMP B-TREE" not in plan, plan


def test_whether_pipeline_work_is_open_reads_its_own_index_not_the_gold_questions(make_project):
    """Before a gold check the dispatcher asks whether any pipeline question is open. Gold questions stay open
    all study long, so a walk of the open questions would pass every finished image's gold ones first."""
    project = make_project(n_images=2, size=64)
    has_open = sql.HAS_OPEN.compiled(project.engine.dialect)
    with project.engine.connect() as connection:
        rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + has_open.sql, has_open.bound({"project": 1}))
        plan = " ".join(str(row[-1]) for row in rows)
    assert "ix_task_open_pipeline" in plan, plan


def test_handing_on_expired_leases_starts_from_the_expired_ones_not_the_open_questions(make_project):
    """The expired-lease query walks the lease index, not the open questions.

    With thousands of open questions, walking them all on every request to find (nearly always) no expired
    lease would make each request's cost grow with the project.
    """
    project = make_project(n_images=2, size=64, configure=no_gold)
    planner = DatabaseDispatcher(project.sessions, project.id, project.config)
    reclaim = planner.hand_out["patch"].reclaim[0].compiled(project.engine.dialect)
    with project.engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + reclaim.sql, reclaim.bound({"project": 1, "worker": 1, "now": 0.0})
        )
        plan = [str(row[-1]) for row in rows]
    lease_step = next(i for i, step in enumerate(plan) if "ix_lease_expires_at" in step)
    task_step = next(i for i, step in enumerate(plan) if step.startswith("SEARCH t USING INTEGER PRIMARY KEY"))
    assert lease_step < task_step and not any("ix_task_queue" in step for step in plan), plan


def single_windows(config) -> None:
    config.crowd.gold_rate = 0.0
    config.patches.presentation = "single"


def test_a_window_closed_by_no_votes_is_decided_without_follow_ups_and_finishes_its_image(make_project):
    project = make_project(n_images=1, size=64, configure=single_windows)
    planner = DatabaseDispatcher(project.sessions, project.id, project.config)
    crowd = workers(project, 3)
    rounds = 0
    while True:  # everyone answers "yes" to verification and "no" to every window
        handed = [(worker, planner.next_task(worker)) for worker in crowd]
        handed = [(worker, task) for worker, task in handed if task is not None]
        if not handed:
            break
        for worker, task in handed:
            planner.submit(
                worker,
                task.task_id,
                "yes" if task.kind == "verify" else "no",
                client_id=f"{worker}-{task.task_id}",
                client_ms=1500,
            )
        rounds += 1
    with project.sessions() as session:
        windows = session.execute(
            select(TaskRow.state, TaskRow.decision, TaskRow.level).where(TaskRow.kind == "patch")
        ).all()
        stage = session.scalar(text("SELECT stage FROM image"))
    assert windows and all(state == "done" and decision == "no" and level == 1 for state, decision, level in windows)
    assert stage == "done" and rounds > 0


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path):
    """A URL to an empty database: a SQLite file, or a fresh schema of the test PostgreSQL (skipped without one)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    with fresh_schema() as url:
        yield url


def test_a_database_at_revision_0002_upgrades_and_its_counters_are_backfilled(empty_database):
    from alembic import command

    url = normalize_url(empty_database)
    command.upgrade(alembic_config(url), "0002")
    engine = create_engine(url)
    with engine.begin() as c:
        add_project_and_image(c)
        for task_id, kind in ((1, "verify"), (2, "patch"), (3, "patch")):
            add_open_task(c, task_id, kind, f"k{task_id}", level=1)
        for worker_id, banned in ((1, 0), (2, 0), (3, 1)):
            c.execute(
                text(
                    "INSERT INTO worker"
                    " (id, project_id, platform, external_id, attributes, gold_seen, gold_correct, too_fast, banned,"
                    " created_at) VALUES (:id, 1, 'local', :ext, '{}', 0, 0, 0, :banned, '2026-01-01')"
                ),
                {"id": worker_id, "ext": f"w{worker_id}", "banned": bool(banned)},
            )
        answers = ((1, 1, '"yes"'), (1, 2, '"no"'), (2, 1, '"yes"'), (2, 3, '"no"'), (2, 2, '"yes"'))
        for n, (task_id, worker_id, value) in enumerate(answers):
            c.execute(
                text(
                    "INSERT INTO answer"
                    " (task_id, worker_id, value, client_id, shown_at, answered_at, seconds, time_source)"
                    " VALUES (:t, :w, :v, :c, 0, 1, 1, 'measured')"
                ),
                {"t": task_id, "w": worker_id, "v": value, "c": f"c{n}"},
            )
        c.execute(text("INSERT INTO lease (task_id, worker_id, expires_at) VALUES (3, 1, 5.0), (3, 2, 6.0)"))
    from crowdpatch.store import open_database

    engine.dispose()
    new_engine, _ = open_database(url)
    assert "ix_task_queue" in {i["name"] for i in inspect(new_engine).get_indexes("task")}
    with new_engine.connect() as c:
        rows = c.execute(
            text("SELECT id, priority, answers_count, leases_count, answers_disagree FROM task ORDER BY id")
        ).all()
    # Task 2: the stopped worker's "no" does not count, so its two counting answers agree.
    assert [tuple(r) for r in rows] == [(1, 0, 2, 0, True), (2, 1, 2, 0, False), (3, 1, 0, 2, False)]
    with new_engine.connect() as c:
        given = c.execute(text("SELECT id, answers_given FROM worker ORDER BY id")).all()
    assert [tuple(r) for r in given] == [(1, 2), (2, 2), (3, 1)]  # each worker's answers, the stopped one's too
    new_engine.dispose()


def _schema_facts(url: str) -> tuple[set[str], set[tuple[str, str]]]:
    """(indexes of answer and lease, (table, column) of every foreign key of task, answer and lease)."""
    engine = create_engine(url)
    found = inspect(engine)
    indexes = {index["name"] for table in ("answer", "lease") for index in found.get_indexes(table)}
    references = {
        (table, key["constrained_columns"][0])
        for table in ("task", "answer", "lease")
        for key in found.get_foreign_keys(table)
    }
    engine.dispose()
    return indexes, references


def test_migration_0011_drops_the_redundant_indexes_and_only_the_unchecked_references_and_undoes_it(empty_database):
    """Lookups by question go through the unique (question, worker) indexes; PostgreSQL stops checking a lease's
    references and a question's parent, and keeps every other check (the answers', the questions' place)."""
    from alembic import command

    url = normalize_url(empty_database)
    postgres = url.startswith("postgresql")
    command.upgrade(alembic_config(url), "head")
    indexes, references = _schema_facts(url)
    assert not {"ix_answer_task_id", "ix_lease_task_id"} & indexes
    assert {"ix_answer_worker_id", "ix_lease_worker_id", "ix_lease_expires_at"} <= indexes
    kept = {("answer", "task_id"), ("answer", "worker_id"), ("task", "project_id"), ("task", "image_id"),
            ("task", "region_id")}  # fmt: skip
    unchecked = {("lease", "task_id"), ("lease", "worker_id"), ("task", "parent_id")}
    assert references == (kept if postgres else kept | unchecked)

    command.downgrade(alembic_config(url), "0010")
    indexes, references = _schema_facts(url)
    assert {"ix_answer_task_id", "ix_lease_task_id"} <= indexes
    assert references == kept | unchecked
    command.upgrade(alembic_config(url), "head")
    assert _schema_facts(url)[1] == (kept if postgres else kept | unchecked)


def test_two_processes_closing_neighbouring_windows_at_once_both_store_their_answer(make_project, monkeypatch):
    """PostgreSQL: both closes would create the child window the two parents share; the second waits for
    the first transaction's lock on the image, then finds the shared child asked already."""
    import threading

    import crowdpatch.crowd.policies.fixed as fixed_policy
    from crowdpatch.patches.lattice import WindowKey, children
    from crowdpatch.store import open_database

    with fresh_schema() as url:

        def single_one_vote(config) -> None:
            one_vote(config)
            config.patches.presentation = "single"
            config.db_url = url

        project = make_project(n_images=1, size=256, configure=single_one_vote)  # windows large enough to split
        assert project.engine.dialect.name == "postgresql"
        planner = DatabaseDispatcher(project.sessions, project.id, project.config)
        a, b, c = workers(project, 3)
        while (task := planner.next_task(c)) is not None and task.kind == "verify":
            planner.submit(c, task.task_id, "yes", client_id=f"v{task.task_id}", client_ms=900)
        with project.sessions() as session:
            level_one = {
                t.key: t.id
                for t in session.scalars(select(TaskRow).where(TaskRow.level == 1, TaskRow.state == "open"))
                if task is None or t.id != task.task_id  # not the one c now holds
            }
        pair = next(
            (k1, k2)
            for k1 in level_one
            for k2 in level_one
            if k1 < k2
            and {str(k) for k in children(WindowKey.parse(k1))} & {str(k) for k in children(WindowKey.parse(k2))}
        )
        first, second = level_one[pair[0]], level_one[pair[1]]
        other = DatabaseDispatcher(
            *open_database(project.config.db_url)[1:], project.id, project.config
        )  # a second "process"
        with project.sessions.begin() as session:
            for worker, task_id in ((a, first), (b, second)):
                session.add(LeaseRow(task_id=task_id, worker_id=worker, expires_at=1e12, leased_at=0.0))
        real_create = fixed_policy.create_children
        first_closed, release = threading.Event(), threading.Event()

        def create_then_hold(connection, window, config):
            created = real_create(connection, window, config)
            if window.id == first:  # hold the first transaction open, its children inserted, not committed
                first_closed.set()
                release.wait(10)
            return created

        monkeypatch.setattr(fixed_policy, "create_children", create_then_hold)
        errors: list[BaseException] = []

        def answer(which: DatabaseDispatcher, worker: int, task_id: int) -> None:
            try:
                which.submit(worker, task_id, "yes", client_id=f"race{task_id}", client_ms=900)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        one = threading.Thread(target=answer, args=(planner, a, first))
        two = threading.Thread(target=answer, args=(other, b, second))
        one.start()
        assert first_closed.wait(10)
        two.start()
        two.join(1.0)  # blocked on the image row the first transaction locked (closing.lock_image)
        release.set()
        one.join(10)
        two.join(10)
        assert not errors, errors
        with project.sessions() as session:
            assert set(session.scalars(select(AnswerRow.task_id).where(AnswerRow.client_id.like("race%")))) == {
                first,
                second,
            }
            keys = Counter(session.execute(select(TaskRow.region_id, TaskRow.key).where(TaskRow.level == 2)).all())
        assert keys and max(keys.values()) == 1


def test_undoing_an_answer_takes_it_out_of_the_workers_quality_counters(make_project):
    """Undo is the exact inverse of what the answer did to its worker: gold record, speed, answer count, run."""

    def gold_first(config) -> None:
        config.crowd.gold_rate = 1.0

    project = make_project(n_images=4, size=64, configure=gold_first)
    planner = DatabaseDispatcher(project.sessions, project.id, project.config, rng=random.Random(0))
    (worker,) = workers(project, 1)

    def counters() -> tuple:
        with project.sessions() as session:
            row = session.get(WorkerRow, worker)
            return row.gold_seen, row.gold_correct, row.too_fast, row.quality, row.attributes

    def answer(value_for, client_id: str, client_ms: int) -> None:
        task = planner.next_task(worker)
        with project.sessions() as session:
            row = session.get(TaskRow, task.task_id)
            value = value_for(row)
        planner.submit(worker, task.task_id, value, client_id=client_id, client_ms=client_ms)

    def right(row):
        return row.gold_answer or "no"

    def wrong(row):
        return "no" if row.gold_answer == "yes" else "yes"

    answer(right, "g1", 2000)
    answer(right, "g2", 2000)
    before = counters()
    answer(wrong, "g3", 100)  # a wrong gold answer, faster than anyone reads
    assert counters() != before
    planner.undo_last(worker)
    assert counters() == before

    answer(right, "g3-again", 2000)  # the question came back with the undo
    project.config.crowd.gold_rate = 0.0  # now the pipeline's yes/no questions
    answer(right, "p1", 2000)
    answer(right, "p2", 2000)
    before = counters()
    assert before[4]["quality"]["runs"]["yes_no"] == {"value": "no", "length": 2, "answers": 2}
    answer(wrong, "p3", 100)  # breaks the run of "no"
    assert counters() != before
    planner.undo_last(worker)
    assert counters() == before


def test_gold_checks_start_anywhere_and_reach_every_gold_question_the_worker_has_not_seen(make_project) -> None:
    """A gold check walks the gold questions by index from a random place, wrapping around: none is missed."""

    def configure(config):
        config.crowd.gold_rate = 1.0

    project = make_project(n_images=6, size=64, configure=configure)
    with project.sessions() as session:
        golds = dict(session.execute(select(TaskRow.id, TaskRow.gold_answer).where(TaskRow.kind == "gold")).all())
    assert golds
    planner = DatabaseDispatcher(project.sessions, project.id, project.config, rng=random.Random(3))
    worker = register_worker(project.sessions, project.id, "simulated", "gold-walker", {}).id
    handed = []
    for i in range(len(golds)):
        task = planner.next_task(worker)
        handed.append(task.task_id)
        planner.submit(worker, task.task_id, golds[task.task_id], client_id=f"g-{i}", client_ms=1600)
    assert sorted(handed) == sorted(golds)
    assert planner.next_task(worker).kind != "gold"  # every gold question seen: the study's own questions


def test_on_postgresql_an_answer_whose_next_question_must_wait_for_a_lock_is_committed_first(make_project):
    """The answer and its next question share a transaction only while leasing never waits: when every free
    question is locked by another transaction, the answer commits alone (its question's lock released)
    and the next question waits in a transaction of its own."""
    import threading

    from crowdpatch.crowd.dispatch.rules import NewAnswer

    with fresh_schema() as url:

        def configure(config) -> None:
            no_gold(config)
            config.patches.presentation = "single"
            config.db_url = url

        project = make_project(n_images=1, size=128, configure=configure)
        planner = DatabaseDispatcher(project.sessions, project.id, project.config)
        a, b, c = workers(project, 3)
        for worker in (b, c):  # verification agreed by two, so patch questions open
            while (task := planner.next_task(worker)) is not None and task.kind == "verify":
                planner.submit(worker, task.task_id, "yes", client_id=f"v{worker}-{task.task_id}", client_ms=900)
        held = planner.next_task(a)
        assert held is not None and held.kind == "patch"
        blocker = project.engine.connect()
        blocker.begin()
        locked = blocker.execute(
            text("SELECT id FROM task WHERE state = 'open' AND id <> :held FOR UPDATE"), {"held": held.task_id}
        ).all()
        assert locked
        outcome: list = []
        answering = threading.Thread(
            target=lambda: outcome.append(
                planner.submit_and_next(NewAnswer(a, held.task_id, "no", "waits", 900, None, "modeled"))
            )
        )
        answering.start()
        try:

            def committed() -> bool:
                with project.sessions() as session:
                    return session.scalar(select(AnswerRow.id).where(AnswerRow.client_id == "waits")) is not None

            deadline = time.monotonic() + 10
            while not committed() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert committed(), "the answer waited for the next question's lock before committing"
            assert answering.is_alive(), "the next question did not wait for the locked questions"
        finally:
            blocker.rollback()
            blocker.close()
            answering.join(10)
        stored, following = outcome[0]
        assert not stored.duplicate and following.assignment is not None
        assert following.assignment.task_id != held.task_id


def task_table(path, rows: list[tuple[str, str, int]]):
    """A SQLite file with the store's schema and open questions (kind, key, priority) of project 1: sqlite3's own
    connection, so a test can count the virtual-machine steps a statement takes."""
    import sqlite3

    from crowdpatch.store.models import Base

    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    connection = sqlite3.connect(path)
    connection.executemany(
        "INSERT INTO task (project_id, image_id, kind, key, level, box, votes_wanted, state, reason, created_at,"
        " priority) VALUES (1, 1, ?, ?, 0, '[0, 0, 1, 1]', 1, 'open', '', '2026-01-01', ?)",
        rows,
    )
    return connection


def steps_of(connection, statement, params: dict) -> tuple[list, int]:
    """The rows of ``statement`` and how many virtual-machine steps SQLite took for them."""
    compiled = statement.compiled(create_engine("sqlite://").dialect)
    executed = [0]
    connection.set_progress_handler(lambda: executed.__setitem__(0, executed[0] + 1), 1)
    rows = connection.execute(compiled.sql, compiled.bound(params)).fetchall()
    connection.set_progress_handler(None, 1)
    return rows, executed[0]


def test_the_first_and_last_gold_question_are_read_from_the_index_ends_however_many_there_are(tmp_path):
    """A gold check reads the first and last gold question ids: two index probes, not a scan of all of them
    (two per image: 20 ms per check at 100,000 images when SQLite scanned them)."""
    steps = []
    for count in (200, 20_000):
        rows = [("gold" if i % 2 else "patch", str(i), 1) for i in range(2 * count)]
        connection = task_table(tmp_path / f"gold-{count}.db", rows)
        found, taken = steps_of(connection, sql.GOLD_IDS, {"project": 1})
        connection.close()
        assert found == [(2, 2 * count)]
        steps.append(taken)
    assert steps[1] == steps[0], steps


def test_a_hand_out_does_not_walk_past_the_open_gold_questions_of_finished_images(tmp_path):
    """Gold questions stay open all study long; in the open questions' order they come last, so the next window
    is found at once however many images (two gold questions each) are finished."""
    from crowdpatch.crowd.kinds import task_priority

    steps = []
    for count in (200, 20_000):
        rows = [("gold", f"gold-{i}", task_priority("gold")) for i in range(count)]
        connection = task_table(tmp_path / f"queue-{count}.db", [*rows, ("patch", "new", task_priority("patch"))])
        pick = sql.hand_out("patch", True, "sqlite").pick[0]
        found, taken = steps_of(connection, pick, {"project": 1, "worker": 1})
        connection.close()
        assert [row[1] for row in found] == ["patch"]
        steps.append(taken)
    assert steps[1] == steps[0], steps


def test_serving_postgresql_plans_on_fresh_statistics(make_project, postgres_schema) -> None:
    """A study's questions are sampled before it is served: the planner does not take thousands of rows for a few."""
    project = make_project(configure=lambda config: setattr(config, "db_url", postgres_schema))
    with project.engine.begin() as connection:
        tasks = connection.exec_driver_sql("SELECT count(*) FROM task").scalar()
    refresh_planner_statistics(project.engine)
    with project.engine.begin() as connection:
        estimated = connection.exec_driver_sql("SELECT reltuples FROM pg_class WHERE oid = 'task'::regclass").scalar()
        analyzed = connection.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_user_tables WHERE schemaname = current_schema() AND last_analyze IS NOT NULL"
        ).scalar()
    assert tasks > 0 and estimated == tasks
    assert analyzed >= 8  # every table of the project's schema


def test_postgresql_connections_run_without_jit_compilation_even_after_a_rollback(postgres_schema) -> None:
    """Compiling a query with an inflated estimate costs about 0.3 s: a server's start, once, took that long."""
    engine = make_engine(postgres_schema)
    with engine.connect() as connection:
        with pytest.raises(Exception, match="division by zero"):
            connection.exec_driver_sql("SELECT 1 / 0")
        connection.rollback()
        assert connection.exec_driver_sql("SHOW jit").scalar() == "off"
    engine.dispose()


def test_a_rolled_back_transaction_leaves_the_statements_prepared_on_its_connection(postgres_schema) -> None:
    """psycopg discards a connection's prepared statements at each rollback, and every read-only session ends
    with one: the answers after it were parsed and planned anew (a quarter of PostgreSQL's CPU under load)."""
    engine = make_engine(postgres_schema)
    with engine.connect() as connection:
        for _ in range(6):  # psycopg prepares a statement at its fifth execution on a connection
            connection.exec_driver_sql("SELECT count(*) FROM pg_class WHERE relpages > %(pages)s", {"pages": 0})
        connection.rollback()
        prepared = connection.exec_driver_sql(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'SELECT count(*) FROM pg_class%%'"
        ).scalar()
        connection.rollback()
        with pytest.raises(Exception, match="division by zero"):
            connection.exec_driver_sql("SELECT 1 / 0")
        connection.rollback()  # a failed transaction is still rolled back
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    engine.dispose()
    assert prepared == 1


def test_postgresql_connections_stay_open_once_opened_and_the_last_returned_is_handed_out_first(
    postgres_schema,
) -> None:
    """A new connection costs PostgreSQL a backend started, its caches filled and every statement prepared anew.
    The pool closed the connections past the answer loop's as they came back: one or two a second under load."""
    engine = make_engine(postgres_schema)
    opened: list[object] = []
    event.listen(engine, "connect", lambda dbapi_connection, _record: opened.append(dbapi_connection))
    at_once = POSTGRES_TRANSACTIONS_AT_ONCE + 2  # the answer loop's, and a page and a picture beside them
    for _ in range(3):
        connections = [engine.connect() for _ in range(at_once)]
        for connection in connections:
            connection.exec_driver_sql("SELECT 1")
        returned_last = connections[-1].connection.dbapi_connection
        for connection in connections:
            connection.close()
    with engine.connect() as connection:
        handed_out = connection.connection.dbapi_connection
    engine.dispose()
    assert len(opened) == at_once
    assert handed_out is returned_last


def test_postgresql_through_its_unix_socket_migrates_and_serves_an_answer(postgres_schema, make_project) -> None:
    """The configuration the docs advise for a server on the database's machine: ``?host=`` names the socket's
    folder, and everything else (migrations, the pool's check of a connection, the answer path) works as on TCP."""
    socket_folder = "/var/run/postgresql"
    if not Path(socket_folder, ".s.PGSQL.5432").exists():
        pytest.skip(f"no PostgreSQL socket in {socket_folder}")
    url = postgres_schema.replace("@127.0.0.1:5432/test?", f"@/test?host={socket_folder}&")

    def through_the_socket(config) -> None:
        one_vote(config)
        config.db_url = url

    project = make_project(n_images=2, size=64, configure=through_the_socket)
    with project.engine.connect() as connection:
        assert connection.execute(text("SELECT inet_server_addr()")).scalar() is None  # not over TCP
    dispatcher = DatabaseDispatcher(project.sessions, project.id, project.config)
    worker = register_worker(project.sessions, project.id, "simulated", "local", {}).id
    first = dispatcher.next_task(worker)
    stored, following = dispatcher.submit_and_next(NewAnswer(worker, first.task_id, "yes", "socket-1"))
    assert not stored.duplicate and following.assignment is not None
    assert following.assignment.task_id != first.task_id
