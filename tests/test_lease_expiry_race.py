"""Expired leases re-issued while 4 processes race on one PostgreSQL: each freed slot goes out once.

Phase A: workers lease every slot and walk away. The clock (injected, the same instant in every
process) moves past the leases' expiry. Phase B: 32 workers in 4 processes ask at the same moment;
each expired slot may be leased again, but only once. Phase C: the walked-away workers answer late
while the new holders answer, racing; a late answer is taken only while its question still wants
one. At the end no question holds more answers than it wanted (gold aside).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest
from sqlalchemy import select

from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.crowd.dispatch.rules import NotLeased, TooManyHeld
from crowdpatch.crowd.votes import votes_target
from crowdpatch.project import Project
from crowdpatch.server.platforms import register_worker
from crowdpatch.store.models import AnswerRow, LeaseRow, TaskRow

PROCESSES = 4
THREADS = 8
T0 = 1_000_000.0
LEASE_SECONDS = 60
T1 = T0 + LEASE_SECONDS + 1


def configure(config, db_url: str) -> None:
    config.db_url = db_url
    config.crowd.lease_seconds = LEASE_SECONDS
    config.crowd.gold_rate = 0.0
    config.patches.presentation = "single"


def planner_at(project: Project, now: float) -> DatabaseDispatcher:
    return DatabaseDispatcher(project.sessions, project.id, project.config, clock=lambda: now)


Outcome = tuple[int, int, str]
"""(worker, task, "leased" | "stored" | "refused")."""


def race(directory: str, start_at: float, jobs: list[tuple[str, int, list[int]]]) -> tuple[list[Outcome], int]:
    """In a fresh process: one thread per worker, all released together at ``start_at`` (wall clock).

    A job is (``lease`` or ``answer``, worker id, task ids to answer); returns (worker, task, outcome) rows,
    and how many hand-outs PostgreSQL ended as deadlocks (each asked again).
    """
    project = Project.open(directory)
    planner = planner_at(project, T1)
    results: list[Outcome] = []
    lock = threading.Lock()
    deadlocks = []
    retry = planner._after_deadlock

    def counted_retry(attempt: int) -> None:
        deadlocks.append(attempt)
        retry(attempt)

    planner._after_deadlock = counted_retry

    def run(action: str, worker_id: int, task_ids: list[int]) -> None:
        time.sleep(max(0.0, start_at - time.time()))
        rows = []
        if action == "lease":
            for _ in range(DatabaseDispatcher.MAX_HELD):
                try:  # a held question is handed out again unless excluded (a reload): ask for the next one
                    assignment = planner.next_task(worker_id, exclude=tuple(t for _, t, _ in rows))
                except TooManyHeld:
                    break
                if assignment is None:
                    break
                rows.append((worker_id, assignment.task_id, "leased"))
        else:
            for task_id in task_ids:
                try:
                    planner.submit(worker_id, task_id, "no", client_id=f"{worker_id}:{task_id}", client_ms=1500)
                    rows.append((worker_id, task_id, "stored"))
                except NotLeased:
                    rows.append((worker_id, task_id, "refused"))
        with lock:
            results.extend(rows)

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    project.close()
    return results, len(deadlocks)


def in_processes(directory: str, jobs: list[tuple[str, int, list[int]]]) -> tuple[list[Outcome], int]:
    """Every process's outcomes, and the deadlocks of all of them."""
    chunks = [jobs[k::PROCESSES] for k in range(PROCESSES)]
    with ProcessPoolExecutor(PROCESSES, mp_context=get_context("spawn")) as pool:
        start_at = time.time() + 3.0  # every process imported and connected before anyone moves
        raced = list(pool.map(race, [directory] * PROCESSES, [start_at] * PROCESSES, chunks))
    return [row for rows, _ in raced for row in rows], sum(deadlocks for _, deadlocks in raced)


@pytest.mark.slow
def test_expired_leases_are_reissued_once_and_never_over_ask(postgres_schema, make_project):
    project = make_project(n_images=16, size=64, configure=lambda config: configure(config, postgres_schema))
    walkers = [register_worker(project.sessions, project.id, "simulated", f"walker-{i}", {}).id for i in range(12)]
    racers = [
        register_worker(project.sessions, project.id, "simulated", f"racer-{i}", {}).id
        for i in range(PROCESSES * THREADS)
    ]

    # Phase A: in this process, before the race; every lease it makes expires at T0 + LEASE_SECONDS.
    early = planner_at(project, T0)
    walked: dict[int, list[int]] = defaultdict(list)
    for worker_id in walkers:
        for _ in range(DatabaseDispatcher.MAX_HELD):
            assignment = early.next_task(worker_id, exclude=tuple(walked[worker_id]))
            if assignment is not None:
                walked[worker_id].append(assignment.task_id)
    abandoned = Counter(task_id for tasks in walked.values() for task_id in tasks)
    assert sum(abandoned.values()) >= 20

    # Phase B: the expired slots, raced for.
    leased, deadlocks = in_processes(str(project.directory), [("lease", worker_id, []) for worker_id in racers])
    # A hand-out that waits for a question holds no other (those it passed over are let go): no cycles.
    assert deadlocks == 0
    reissued = Counter(task_id for _, task_id, _ in leased)
    assert len({(w, t) for w, t, _ in leased}) == len(leased), "a worker got the same question twice"
    with project.sessions() as session:
        tasks = {task.id: task for task in session.scalars(select(TaskRow).where(TaskRow.kind != "gold"))}
        live = Counter(session.scalars(select(LeaseRow.task_id).where(LeaseRow.expires_at > T1)))
    # Exclusive: no question is leased past what it wants (every phase-A lease has expired, none answered).
    for task_id, count in reissued.items():
        assert count <= votes_target([], tasks[task_id].votes_wanted, True), (task_id, count)
        assert live[task_id] == count
    # Re-issued: the racers could take more than there was, so every slot freed by expiry went out again.
    assert len(leased) < len(racers) * DatabaseDispatcher.MAX_HELD
    assert all(reissued[t] == votes_target([], tasks[t].votes_wanted, True) for t in abandoned)

    # Phase C: late answers from the walkers race the new holders' answers.
    held: dict[int, list[int]] = defaultdict(list)
    for worker_id, task_id, _ in leased:
        held[worker_id].append(task_id)
    answers, _ = in_processes(
        str(project.directory),
        [("answer", worker_id, tasks_) for worker_id, tasks_ in walked.items()]
        + [("answer", worker_id, tasks_) for worker_id, tasks_ in held.items()],
    )
    outcome = {(w, t): o for w, t, o in answers}
    assert all(outcome[(w, t)] == "stored" for w, t, _ in leased), "an answer on a live lease was refused"
    with project.sessions() as session:
        values: dict[int, list] = defaultdict(list)
        for task_id, value in session.execute(select(AnswerRow.task_id, AnswerRow.value).order_by(AnswerRow.id)):
            values[task_id].append(value)
    for task_id, given in values.items():
        task = tasks[task_id]
        assert all(k < votes_target(given[:k], task.votes_wanted, True) for k in range(len(given))), (task_id, given)
    # Every slot had a live new holder, so each late answer would have over-asked its question: all refused.
    assert sorted(outcome[(w, t)] for w, ts in walked.items() for t in ts) == ["refused"] * sum(abandoned.values())


class Deadlock(Exception):
    """What psycopg raises when PostgreSQL ends one of two transactions that wait on each other."""

    sqlstate = "40P01"


def test_a_hand_out_ended_by_a_deadlock_is_asked_again(postgres_schema, make_project, monkeypatch):
    project = make_project(n_images=4, size=64, configure=lambda config: configure(config, postgres_schema))
    worker = register_worker(project.sessions, project.id, "simulated", "unlucky", {}).id
    dispatcher = planner_at(project, T0)
    real_next, calls = dispatcher._next, []

    def deadlocked_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise Deadlock("deadlock detected")
        return real_next(*args, **kwargs)

    monkeypatch.setattr(dispatcher, "_next", deadlocked_once)
    assignment = dispatcher.next_task(worker)
    assert assignment is not None and len(calls) == 2
    with project.sessions() as session:
        assert session.scalars(select(LeaseRow.task_id).where(LeaseRow.worker_id == worker)).all() == [
            assignment.task_id
        ]


def test_other_database_errors_are_not_retried(postgres_schema, make_project, monkeypatch):
    project = make_project(n_images=4, size=64, configure=lambda config: configure(config, postgres_schema))
    worker = register_worker(project.sessions, project.id, "simulated", "unlucky", {}).id
    dispatcher = planner_at(project, T0)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(dispatcher, "_next", broken)
    with pytest.raises(RuntimeError, match="disk is full"):
        dispatcher.next_task(worker)
    assert len(calls) == 1
