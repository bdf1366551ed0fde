"""What estimating workers' accuracies costs as their histories grow (the adaptive and precise planners ask it
after yes/no answers, and `masks` per grid family).

Three workers who answered the same N decided yes/no questions; the table gives the mean time of one
``worker_accuracies`` call for the three, on SQLite. It reads each worker's last ``AGREEMENT_WINDOW``
answers, so the time should stay flat as N grows.

    python bench/worker_accuracy.py
    python bench/worker_accuracy.py --write     # also into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, select

from benchkit import publish
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.policies.posteriors import AGREEMENT_WINDOW, worker_accuracies
from crowdpatch.project import Project
from crowdpatch.store.models import AnswerRow, ImageRow, TaskRow, WorkerRow

HISTORIES = (150, 600, 2000, 6000)
CALLS = 5


def add_questions(project: Project, workers: list[int], image_id: int, first: int, count: int) -> None:
    """``count`` decided verify questions, each answered "yes" by every worker."""
    with project.sessions.begin() as session:
        session.execute(
            insert(TaskRow),
            [
                dict(project_id=project.id, image_id=image_id, kind="verify", key=f"k{first + i}", level=0,
                     box=[0, 0, 8, 8], votes_wanted=len(workers), state="done", reason="")
                for i in range(count)
            ],
        )  # fmt: skip
        task_ids = session.scalars(select(TaskRow.id).order_by(TaskRow.id.desc()).limit(count)).all()
        session.execute(
            insert(AnswerRow),
            [
                dict(task_id=task, worker_id=worker, value="yes", client_id=f"c{task}-{worker}", shown_at=0.0,
                     answered_at=1.0, seconds=1.6, time_source="modeled")
                for task in task_ids
                for worker in workers
            ],
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    project = Project.create(Path(tempfile.mkdtemp()) / "accuracy", ProjectConfig(name="accuracy", target="object"))
    with project.sessions.begin() as session:
        image = ImageRow(project_id=project.id, path="a.png", width=8, height=8, split="train", groups={})
        workers = [WorkerRow(project_id=project.id, platform="local", external_id=f"w{i}") for i in range(3)]
        session.add_all([image, *workers])
        session.flush()
        image_id, worker_ids = image.id, [worker.id for worker in workers]
    rows, done = [], 0
    for history in HISTORIES:
        add_questions(project, worker_ids, image_id, done, history - done)
        done = history
        with project.sessions() as session:
            start = time.perf_counter()
            for _ in range(CALLS):
                worker_accuracies(session, set(worker_ids), project.config)
            rows.append(
                {"answers per worker": history, "ms per call (3 workers)": (time.perf_counter() - start) / CALLS * 1000}
            )
    project.close()
    note = f"`python bench/worker_accuracy.py` (SQLite; each worker's last {AGREEMENT_WINDOW} answers are read)."
    publish("worker_accuracy", rows, note, args.write)


if __name__ == "__main__":
    main()
