"""The worker-quality table a requester reads: who answers well, who is fast, who was stopped."""

from __future__ import annotations

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
    rows = []
    for worker in workers:
        worker_id, gold_seen, gold_correct = worker.id, worker.gold_seen, worker.gold_correct
        mine = answers[answers["worker_id"] == worker_id]
        votes = list(_votes(mine))
        agree = [(label == 1) == (consensus[key] >= 0.5) for key, label in votes if key in consensus.index]
        rows.append(
            {
                "worker": worker.external_id,
                "worker_row": worker_id,
                "evidence": worker.evidence or "",
                "platform": worker.platform,
                "answers": len(mine),
                "gold_seen": gold_seen,
                "gold_accuracy": gold_correct / gold_seen if gold_seen else float("nan"),
                "agreement": sum(agree) / len(agree) if agree else float("nan"),
                "yes_rate": sum(label for _, label in votes) / len(votes) if votes else float("nan"),
                "median_seconds": float(mine["seconds"].median()) if len(mine) else float("nan"),
                "too_fast": worker.too_fast,
                "banned": bool(worker.banned),
                # Which rule stopped it (gold, too_fast, constant); empty for a worker not stopped.
                "stopped_reason": worker.stopped_reason or "",
            }
        )
    return pd.DataFrame(rows)


def _votes(answers: pd.DataFrame):
    """(question key, 1/0) for every patch answer and every cell of every grid answer."""
    for task_id, value, kind, grid_size in zip(
        answers["task_id"], answers["value"], answers["kind"], answers["grid_size"]
    ):
        if kind == "patch":
            yield str(task_id), int(value == "yes")
        elif kind == "grid" and isinstance(value, dict):
            clicked = set(value.get("cells", []))
            for cell in range(int(grid_size or 0) ** 2):
                yield f"{task_id}:{cell}", int(cell in clicked)
