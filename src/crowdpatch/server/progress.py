"""The figures a requester watches while a study runs: progress, pace, measured time, worker quality."""

from __future__ import annotations

import math
import statistics
import threading
import time
from pathlib import PurePath
from typing import Any

from sqlalchemy import func, select

from crowdpatch.aggregate.quality import worker_quality
from crowdpatch.masks.build import MaskBuilder
from crowdpatch.project import Project
from crowdpatch.store.models import AnswerRow, ImageRow, TaskRow

PACE_WINDOW_SECONDS = 300


def progress(project: Project) -> dict[str, Any]:
    """Images per stage, questions open/done per kind, answers: the `/progress` endpoint."""
    with project.sessions() as session:
        stages = dict(
            session.execute(
                select(ImageRow.stage, func.count()).where(ImageRow.project_id == project.id).group_by(ImageRow.stage)
            ).all()
        )
        questions: dict[str, dict[str, int]] = {}
        for kind, state, count in session.execute(
            select(TaskRow.kind, TaskRow.state, func.count())
            .where(TaskRow.project_id == project.id)
            .group_by(TaskRow.kind, TaskRow.state)
        ):
            questions.setdefault(kind, {"open": 0, "done": 0})[state] = count
        answers = dict(
            session.execute(
                select(TaskRow.kind, func.count(AnswerRow.id))
                .join(TaskRow, TaskRow.id == AnswerRow.task_id)
                .where(TaskRow.project_id == project.id)
                .group_by(TaskRow.kind)
            ).all()
        )
    return {"images": stages, "questions": questions, "answers": sum(answers.values()), "answers_by_kind": answers}


def pace(project: Project, now: float | None = None) -> dict[str, Any]:
    """Answers per minute lately, and median seconds per answer and per image, by kind of time."""
    now = time.time() if now is None else now
    with project.sessions() as session:
        rows = session.execute(
            select(AnswerRow.answered_at, AnswerRow.seconds, AnswerRow.time_source, TaskRow.image_id, TaskRow.kind)
            .join(TaskRow, TaskRow.id == AnswerRow.task_id)
            .where(TaskRow.project_id == project.id)
        ).all()
    recent = sum(1 for answered_at, *_ in rows if answered_at >= now - PACE_WINDOW_SECONDS)
    result: dict[str, Any] = {"answers_per_minute": recent / (PACE_WINDOW_SECONDS / 60)}
    for source in ("measured", "modeled"):
        for group, kinds in (("patch", {"verify", "patch", "grid", "gold"}), ("polygon", {"polygon"})):
            mine = [(seconds, image_id) for _, seconds, s, image_id, kind in rows if s == source and kind in kinds]
            if not mine:
                continue
            per_image: dict[int, float] = {}
            for seconds, image_id in mine:
                per_image[image_id] = per_image.get(image_id, 0.0) + seconds
            result[f"{source}_{group}"] = {
                "answers": len(mine),
                "median_seconds_per_answer": statistics.median(s for s, _ in mine),
                "median_seconds_per_image": statistics.median(per_image.values()),
            }
    return result


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


class LiveMasks:
    """Aggregation for the dashboard, recomputed at most every ``max_age`` seconds."""

    def __init__(self, project: Project, max_age: float = 5.0):
        self.project = project
        self.max_age = max_age
        self._builder: MaskBuilder | None = None
        self._built_at = 0.0
        self._lock = threading.Lock()

    def builder(self) -> MaskBuilder:
        with self._lock:
            if self._builder is None or time.monotonic() - self._built_at > self.max_age:
                self._builder = MaskBuilder(self.project)
                self._built_at = time.monotonic()
            return self._builder

    def workers(self) -> list[dict[str, Any]]:
        with self.project.sessions() as session:
            table = worker_quality(session, self.project.id, self.builder().posteriors)
        return [{key: _clean(value) for key, value in row.items()} for row in table.to_dict("records")]

    def preview_images(self, limit: int = 12) -> list[dict[str, Any]]:
        """The images whose masks are being formed: id, file name, size, stage and answers so far."""
        with self.project.sessions() as session:
            rows = session.execute(
                select(ImageRow.id, ImageRow.path, ImageRow.width, ImageRow.height, ImageRow.stage)
                .where(ImageRow.project_id == self.project.id, ImageRow.stage.in_(("patch", "done")))
                .order_by(ImageRow.stage.desc(), ImageRow.id)
                .limit(limit)
            ).all()
            answers = (
                dict(
                    session.execute(
                        select(TaskRow.image_id, func.count(AnswerRow.id))
                        .join(AnswerRow, AnswerRow.task_id == TaskRow.id)
                        .where(TaskRow.image_id.in_([row.id for row in rows]))
                        .group_by(TaskRow.image_id)
                    ).all()
                )
                if rows
                else {}
            )
        return [
            {
                "image_id": row.id,
                "name": PurePath(row.path).name,
                "width": row.width,
                "height": row.height,
                "stage": row.stage,
                "answers": answers.get(row.id, 0),
            }
            for row in rows
        ]
