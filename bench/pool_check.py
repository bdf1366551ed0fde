"""What the pool's check of a PostgreSQL connection costs each answer: a ping, or a look at its socket.

32 workers answer patch questions in turn through the database dispatcher (``submit_and_next``: an
answer and its next question in one transaction, in process, as the server stores them). Rounds of
answers alternate between the two ways the pool checks a connection before handing it out:
SQLAlchemy's ``pool_pre_ping`` (a ``SELECT 1`` and its answer: one round trip per transaction) and
crowdpatch's own check (:mod:`crowdpatch.store.liveness`: is the idle connection's socket still quiet?).
Alternating in one process keeps the host's drift (runs minutes apart differ by a fifth here) out of
the comparison. The table gives the medians over the rounds, per answer: wall time, this process's CPU
and PostgreSQL's.

    python bench/pool_check.py [--rounds 12] [--postgres URL] [--write]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from benchkit import POSTGRES, cpu_model, publish
from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.crowd.dispatch.rules import NewAnswer
from crowdpatch.project import Project
from crowdpatch.server.platforms import register_worker
from crowdpatch.store.db import refresh_planner_statistics
from load import database_cpu_seconds
from scale import served_study_on_postgres

WORKERS = 32
ANSWERS_PER_ROUND = 128
CHECKS = {"ping (pool_pre_ping)": True, "socket (crowdpatch)": False}


class Crowd:
    """Workers answering at random, each holding the question it was handed last."""

    def __init__(self, project: Project):
        # Random answers at a steady pace: no worker may be stopped for them.
        project.config.crowd.constant_run_answers = project.config.crowd.constant_run_grid_answers = 10**9
        self.dispatcher = DatabaseDispatcher(project.sessions, project.id, project.config)
        self.workers = [
            register_worker(project.sessions, project.id, "simulated", f"w{i}", {}).id for i in range(WORKERS)
        ]
        self.held = {worker: self.dispatcher.next_task(worker) for worker in self.workers}
        self.rng = random.Random(0)
        self.answers = 0

    def answer(self, count: int) -> int:
        """Up to ``count`` answers, the workers in turn; how many were given (the work may run out)."""
        given = 0
        while given < count:
            before = given
            for worker in self.workers:
                task = self.held[worker] or self.dispatcher.next_task(worker)
                if task is None:
                    continue
                self.answers += 1
                value = self.rng.choice(["yes", "no"])
                ms = self.rng.randint(700, 4000)
                answer = NewAnswer(worker, task.task_id, value, f"a{self.answers}", client_ms=ms, time_source="modeled")
                self.held[worker] = self.dispatcher.submit_and_next(answer)[1].assignment
                given += 1
            if given == before:
                break
        return given


def measure(project: Project, rounds: int) -> list[dict[str, object]]:
    """Per check: medians over ``rounds`` rounds of ms per answer (wall, this process's CPU, PostgreSQL's)."""
    refresh_planner_statistics(project.engine)
    crowd = Crowd(project)
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in CHECKS}
    for _ in range(rounds):
        for name, ping in CHECKS.items():
            project.engine.pool._pre_ping = ping  # SQLAlchemy's switch for pool_pre_ping, read at each checkout
            crowd.answer(WORKERS)  # settle: statements prepared, caches warm
            wall, cpu, database = time.perf_counter(), time.process_time(), database_cpu_seconds()
            given = crowd.answer(ANSWERS_PER_ROUND)
            if given == 0:
                raise RuntimeError("the work ran out: give the project more images")
            figures[name].append(
                (
                    (time.perf_counter() - wall) * 1000 / given,
                    (time.process_time() - cpu) * 1000 / given,
                    (database_cpu_seconds() - database) * 1000 / given,
                )
            )
    project.engine.pool._pre_ping = False
    return [
        {
            "pool check": name,
            "rounds": len(runs),
            "ms/answer": round(statistics.median(run[0] for run in runs), 2),
            "server CPU ms/answer": round(statistics.median(run[1] for run in runs), 2),
            "PostgreSQL CPU ms/answer": round(statistics.median(run[2] for run in runs), 2),
        }
        for name, runs in figures.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--postgres", default=POSTGRES)
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    with served_study_on_postgres(args.postgres, "pool_check", 200) as project:
        rows = measure(project, args.rounds)
    note = (
        f"`python bench/pool_check.py --write`; host: {cpu_model()}; {WORKERS} workers in turn, in process;"
        f" {args.rounds} rounds of {ANSWERS_PER_ROUND} answers per check, alternating; medians."
    )
    publish("pool_check", rows, note, args.write)


if __name__ == "__main__":
    main()
