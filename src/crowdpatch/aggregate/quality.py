"""The worker-quality table a requester reads: who answers well, who is fast, who was stopped."""

from __future__ import annotations

from collections import Counter

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdpatch.store.models import AnswerRow, TaskRow, WorkerRow


def worker_quality(session: Session, project_id: int, consensus: pd.Series) -> pd.DataFrame:
    """One row per worker: answers, gold accuracy, agreement with the aggregated answer, speed, ban and its rule.

    ``worker`` is the platform's id; ``worker_row`` (the label aggregation uses) and ``evidence`` tell
    apart workers that arrived under one id with different platform evidence (``WorkerRow.evidence``).

    ``consensus`` is P(yes) per question key (as from :func:`posteriors`: a window, or a grid
    cell); agreement counts a vote as agreeing when it is on the side of 0.5 the aggregate is on.
    """
    workers = session.execute(
        select(
            WorkerRow.id,
            WorkerRow.platform,
            WorkerRow.external_id,
            WorkerRow.evidence,
            WorkerRow.gold_seen,
            WorkerRow.gold_correct,
            WorkerRow.too_fast,
            WorkerRow.banned,
            WorkerRow.stopped_reason,
        ).where(WorkerRow.project_id == project_id)
    ).all()
    answers = pd.DataFrame(
        session.execute(
            select(
                AnswerRow.worker_id,
                AnswerRow.task_id,
                AnswerRow.value,
                AnswerRow.seconds,
                TaskRow.kind,
                TaskRow.grid_size,
            )
            .join(TaskRow, TaskRow.id == AnswerRow.task_id)
            .where(TaskRow.project_id == project_id)
        ).all(),
        columns=["worker_id", "task_id", "value", "seconds", "kind", "grid_size"],
    )
    # One pass over the answers for all workers (a filter per worker made the table quadratic in the study's size).
    per_worker = answers.groupby("worker_id")["seconds"]
    counts, medians = per_worker.size().to_dict(), per_worker.median().to_dict()
    posterior = consensus.to_dict()
    yes: Counter[int] = Counter()
    voted: Counter[int] = Counter()
    judged: Counter[int] = Counter()
    agreed: Counter[int] = Counter()
    for worker_id, key, label in _votes(answers):
        voted[worker_id] += 1
        yes[worker_id] += label
        p = posterior.get(key)
        if p is not None:
            judged[worker_id] += 1
            agreed[worker_id] += (label == 1) == (p >= 0.5)
    rows = []
    for worker in workers:
        worker_id, gold_seen, gold_correct = worker.id, worker.gold_seen, worker.gold_correct
        rows.append(
            {
                "worker": worker.external_id,
                "worker_row": worker_id,
                "evidence": worker.evidence or "",
                "platform": worker.platform,
                "answers": counts.get(worker_id, 0),
                "gold_seen": gold_seen,
                "gold_accuracy": gold_correct / gold_seen if gold_seen else float("nan"),
                "agreement": agreed[worker_id] / judged[worker_id] if judged[worker_id] else float("nan"),
                "yes_rate": yes[worker_id] / voted[worker_id] if voted[worker_id] else float("nan"),
                "median_seconds": float(medians[worker_id]) if worker_id in medians else float("nan"),
                "too_fast": worker.too_fast,
                "banned": bool(worker.banned),
                # Which rule stopped it (gold, too_fast, constant); empty for a worker not stopped.
                "stopped_reason": worker.stopped_reason or "",
            }
        )
    return pd.DataFrame(rows)


def _votes(answers: pd.DataFrame):
    """(worker, question key, 1/0) for every patch answer and every cell of every grid answer."""
    for worker_id, task_id, value, kind, grid_size in zip(
        answers["worker_id"], answers["task_id"], answers["value"], answers["kind"], answers["grid_size"]
    ):
        if kind == "patch":
            yield worker_id, str(task_id), int(value == "yes")
        elif kind == "grid" and isinstance(value, dict):
            clicked = set(value.get("cells", []))
            for cell in range(int(grid_size or 0) ** 2):
                yield worker_id, f"{task_id}:{cell}", int(cell in clicked)
