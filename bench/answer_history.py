"""What storing an answer costs as its worker's history grows (the answer path reads the worker's answer count).

One worker who already gave N answers (on decided questions, inserted directly) answers 200 more
patch questions through the database dispatcher (``submit_and_next``: the answer and its next
question, in process, as the server stores them), on SQLite and PostgreSQL. The table gives the
milliseconds per answer (median and 95th percentile) and, on PostgreSQL, the database's CPU per
answer. The count is kept on the worker's row (``worker.answers_given``), so the cost should stay
flat as N grows; counted from the answer table, it grew with N.

    python bench/answer_history.py [--histories 0 10000 50000] [--postgres URL]
    python bench/answer_history.py --write     # also into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert, update

from benchkit import POSTGRES, builtin_files, cpu_model, markdown_table, publish
from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.crowd.dispatch.rules import NewAnswer
from crowdpatch.project import Project
from crowdpatch.server.platforms import register_worker
from crowdpatch.store.db import refresh_planner_statistics
from crowdpatch.store.models import AnswerRow, ImageRow, TaskRow, WorkerRow
from load import database_cpu_seconds, make_project
from scale import PostgresSchema

ANSWERS = 200
CHUNK = 10_000


def add_history(project: Project, worker_id: int, count: int) -> None:
    """``count`` decided verify questions answered by the worker, written directly, its count with them; on an
    image of their own (an image's many questions would slow what reads its questions, not what reads the worker)."""
    with project.sessions.begin() as session:
        image = ImageRow(project_id=project.id, path=f"history-{worker_id}.png", width=8, height=8, split="train",
                         groups={})  # fmt: skip
        session.add(image)
        session.flush()
        image_id = image.id
        for first in range(0, count, CHUNK):
            size = min(CHUNK, count - first)
            task_ids = session.scalars(
                insert(TaskRow).returning(TaskRow.id),
                [
                    dict(project_id=project.id, image_id=image_id, kind="verify", key=f"history-{first + i}",
                         level=0, box=[0, 0, 8, 8], votes_wanted=1, state="done", reason="history")
                    for i in range(size)
                ],
            ).all()  # fmt: skip
            session.execute(
                insert(AnswerRow),
                [
                    dict(task_id=task, worker_id=worker_id, value="yes", client_id=f"history-{task}", shown_at=0.0,
                         answered_at=1.0, seconds=1.6, time_source="modeled")
                    for task in task_ids
                ],
            )  # fmt: skip
        session.execute(update(WorkerRow).where(WorkerRow.id == worker_id).values(answers_given=count))


def measure(project: Project, history: int) -> dict[str, object]:
    """Milliseconds per answer of one worker with ``history`` answers behind it."""
    dispatcher = DatabaseDispatcher(project.sessions, project.id, project.config)
    worker_id = register_worker(project.sessions, project.id, "simulated", f"history-{history}", {}).id
    add_history(project, worker_id, history)
    postgres = project.engine.dialect.name == "postgresql"
    if postgres:
        refresh_planner_statistics(project.engine)
    task = dispatcher.next_task(worker_id)
    times, cpu_before = [], database_cpu_seconds()
    for n in range(ANSWERS):
        if task is None:
            break
        start = time.perf_counter()
        _, following = dispatcher.submit_and_next(
            NewAnswer(worker_id, task.task_id, "no", f"timed-{history}-{n}", client_ms=1600, time_source="modeled")
        )
        times.append((time.perf_counter() - start) * 1000)
        task = following.assignment
    cpu = (database_cpu_seconds() - cpu_before) * 1000 / len(times) if postgres else None
    return {
        "database": project.engine.dialect.name,
        "answers before": history,
        "answers timed": len(times),
        "p50 ms": statistics.median(times),
        "p95 ms": float(np.percentile(times, 95)),
        "PostgreSQL CPU ms/answer": "-" if cpu is None else round(cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--histories", type=int, nargs="+", default=[0, 10_000, 50_000])
    parser.add_argument("--postgres", default=POSTGRES)
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="crowdpatch-history-"))
    files = builtin_files(out, 40)
    rows = []

    def run(tag: str, history: int, db_url: str | None) -> None:
        project = make_project(out / tag, files, db_url, "patch")
        try:
            rows.append(measure(project, history))
        finally:
            project.close()
        print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)

    for history in args.histories:
        run(f"sqlite-{history}", history, None)
    for history in args.histories:
        with PostgresSchema(args.postgres, f"history_{history}", keep=False) as url:
            run(f"postgresql-{history}", history, url)
    note = f"`python bench/answer_history.py --write`; host: {cpu_model()}; one worker, {ANSWERS} answers timed."
    publish("answer_history", rows, note, args.write)


if __name__ == "__main__":
    main()
