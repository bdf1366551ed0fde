"""What an answer costs on PostgreSQL as answers pile up between two vacuums of the lease table.

Every answer deletes its lease and leases the next question: one dead lease row per answer, and one
dead entry in each of the lease table's indexes, until a vacuum removes them. Autovacuum looks at a
database once a minute (``autovacuum_naptime``), so at a few hundred answers a second the lease table
holds tens of thousands of dead rows beside a few dozen live ones. A statement that reads the lease
table whole, or a worker's entries of an index whole, then costs in proportion to the answers since
the last vacuum, not to the leases held.

A patch-phase study on PostgreSQL (autovacuum off on its tables, to hold the pile-up still) is
answered in process by 32 workers in turn, each answer with its next question
(``submit_and_next``, as the server stores them). After each checkpoint's worth of answers, 300 more
are timed on fresh connections; the table gives PostgreSQL's own time for the answer's two statements
(auto_explain's durations: the database's work without the client's or the network's, median), all of
its statements' time per answer, the answer's time in the client (median, one answer at a time) and
the lease table's size. The last row is taken after a ``VACUUM``: the cost with nothing piled up.

    python bench/lease_churn.py [--checkpoints 0 5000 10000 20000] [--postgres URL]
    python bench/lease_churn.py --write     # also into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import time
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import sessionmaker

from benchkit import POSTGRES, cpu_model, publish
from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.crowd.dispatch.rules import Assignment, NewAnswer, WorkerStopped
from crowdpatch.project import Project
from crowdpatch.server.platforms import register_worker
from crowdpatch.store.db import make_engine
from scale import served_study_on_postgres

WORKERS = 32
TIMED = 300
HOT_TABLES = ("lease", "task", "worker", "answer")


class Crowd:
    """32 workers answering in turn through one dispatcher, each holding the question it was handed."""

    def __init__(self, project: Project):
        self.dispatcher = DatabaseDispatcher(project.sessions, project.id, project.config)
        self.workers = [
            register_worker(project.sessions, project.id, "simulated", f"churn-{i}", {}).id for i in range(WORKERS)
        ]
        self.held: dict[int, Assignment | None] = {w: self.dispatcher.next_task(w) for w in self.workers}
        self.given = 0
        self.rng = random.Random(0)

    def answer(self, count: int) -> list[float]:
        """``count`` answers, in turn; each one's milliseconds in the client."""
        times: list[float] = []
        idle = 0
        while len(times) < count:
            if idle >= len(self.workers):
                raise RuntimeError("the study ran out of questions or workers: build it with more images (--images)")
            worker = self.workers[(self.given + idle) % len(self.workers)]
            task = self.held[worker]
            if task is None:
                try:
                    task = self.dispatcher.next_task(worker)
                except WorkerStopped:  # by the crowd's quality rules: the others answer on
                    self.workers.remove(worker)
                    continue
            if task is None:  # nothing free for this worker just now (the others hold it): the next one's turn
                idle += 1
                continue
            idle = 0
            start = time.perf_counter()
            _, following = self.dispatcher.submit_and_next(
                NewAnswer(worker, task.task_id, self.rng.choice(["yes", "no"]), f"churn-{self.given}",
                          client_ms=self.rng.randint(900, 4000), time_source="modeled")
            )  # fmt: skip
            times.append((time.perf_counter() - start) * 1000)
            self.held[worker] = following.assignment
            self.given += 1
        return times


def lease_pages(project: Project) -> tuple[int, int]:
    """(pages of the lease table's heap, pages of its indexes)."""
    with project.engine.connect() as connection:
        return connection.execute(
            text("SELECT pg_relation_size('lease') / 8192, pg_indexes_size('lease') / 8192")
        ).one()  # fmt: skip


class StatementTimes:
    """PostgreSQL's own time for each statement the answer path sends, from auto_explain (a module shipped with
    PostgreSQL; loading it takes a superuser): the database's work alone, without the client's or the network's."""

    def __init__(self, url: str):
        self.durations: list[tuple[str, float]] = []
        self.engine = make_engine(url)
        event.listen(self.engine, "connect", self._explain)
        self.sessions = sessionmaker(self.engine)

    def _explain(self, dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.add_notice_handler(self._note)
        dbapi_connection.execute("LOAD 'auto_explain'")
        dbapi_connection.execute("SET auto_explain.log_min_duration = 0")
        dbapi_connection.execute("SET client_min_messages = log")
        dbapi_connection.commit()

    def _note(self, diagnostic: Any) -> None:
        found = DURATION.match(diagnostic.message_primary or "")
        if found:
            self.durations.append((found["query"], float(found["ms"])))

    def of(self, start: str) -> list[float]:
        return [ms for query, ms in self.durations if query.startswith(start)]


DURATION = re.compile(r"duration: (?P<ms>[0-9.]+) ms\s+plan:\s+Query Text: (?P<query>.*)", re.S)
ANSWERING, WRITE = "SELECT crowdpatch_answering", "WITH stored AS"
"""The answer path's two statements: the locked read (migration 0008), the write that leases the next question."""


def timed_row(project: Project, crowd: Crowd, since_vacuum: str) -> dict[str, Any]:
    """TIMED answers through a dispatcher whose connections report each statement's time."""
    times = StatementTimes(project.config.db_url)
    serving = crowd.dispatcher
    crowd.dispatcher = DatabaseDispatcher(times.sessions, project.id, project.config)
    times.durations.clear()  # the dispatcher's start (its counter check) is not an answer's
    try:
        client = crowd.answer(TIMED)
    finally:
        crowd.dispatcher = serving
        times.engine.dispose()
    heap, indexes = lease_pages(project)
    return {
        "answers since vacuum": since_vacuum,
        "read ms (p50)": statistics.median(times.of(ANSWERING)),
        "write and lease ms (p50)": statistics.median(times.of(WRITE)),
        "PostgreSQL statements ms/answer": sum(ms for _, ms in times.durations) / TIMED,
        "client p50 ms": statistics.median(client),
        "lease heap pages": heap,
        "lease index pages": indexes,
    }


def measure(project: Project, checkpoints: list[int]) -> list[dict[str, Any]]:
    with project.engine.begin() as connection:
        for table in HOT_TABLES:
            connection.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
    crowd = Crowd(project)
    rows = []
    for checkpoint in sorted(checkpoints):
        crowd.answer(checkpoint - crowd.given)
        rows.append(timed_row(project, crowd, f"{crowd.given:,}"))
        print(rows[-1], flush=True)
    with project.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"VACUUM {', '.join(HOT_TABLES)}"))
    rows.append(timed_row(project, crowd, "0 (after VACUUM)"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[0, 5_000, 10_000, 20_000])
    parser.add_argument("--images", type=int, default=1200, help="Built-in images (64 px): enough questions.")
    parser.add_argument("--postgres", default=POSTGRES)
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    with served_study_on_postgres(args.postgres, "lease_churn", args.images) as project:
        rows = measure(project, args.checkpoints)
    note = (
        f"`python bench/lease_churn.py --write`; host: {cpu_model()}; {WORKERS} workers in turn, "
        f"{TIMED} answers timed after each checkpoint, autovacuum off on {', '.join(HOT_TABLES)}."
    )
    publish("lease_churn", rows, note, args.write)


if __name__ == "__main__":
    main()
