"""Answering a project's questions with simulated workers, in process, as a discrete-event simulation.

Each worker takes a question, "spends" its modeled answer time, and only then is its answer
stored: workers run in parallel on a simulated clock, so the dispatcher sees answers in the order
real people would deliver them, and the clock at the end is the batch's latency.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sqlalchemy import func, select

from crowdpatch.boxes import Box
from crowdpatch.crowd.dispatch.memory import MemoryDispatcher, SimulatedClock
from crowdpatch.crowd.dispatch.rules import AnswerRejected, Assignment
from crowdpatch.crowd.kinds import CORRECT, EXTREME, PICK
from crowdpatch.datasets import load_mask
from crowdpatch.datasets.masks import MASK_IGNORE, MASK_OBJECT
from crowdpatch.masks.candidate_store import CandidateStore
from crowdpatch.masks.coverage import CoverageOracle
from crowdpatch.masks.metrics import mask_iou
from crowdpatch.patches.lattice import grid_cells
from crowdpatch.project import Project
from crowdpatch.saliency.outline import outline_mask, salient_pixels
from crowdpatch.simulate.workers import (
    SimulatedWorker,
    answer_correction,
    answer_extreme,
    answer_grid,
    answer_outline,
    answer_pick,
    answer_region,
    answer_seconds,
    answer_window,
    draw_workers,
)
from crowdpatch.store.models import AnswerRow, ImageRow, TaskRow, WorkerRow


class SimulationError(RuntimeError):
    """The project cannot be answered by simulated workers."""


@dataclass
class SimulationReport:
    answers: int
    workers: int
    banned: int
    latency_seconds: float
    open_questions: int
    rejected_late: int = 0
    """Answers refused because they came after the lease expired and the question was full."""


def ensure_workers(project: Project, count: int) -> list[tuple[int, SimulatedWorker]]:
    """The project's first ``count`` simulated workers, drawn once and kept in the store."""
    with project.sessions.begin() as session:
        rows = session.scalars(
            select(WorkerRow)
            .where(WorkerRow.project_id == project.id, WorkerRow.platform == "simulated")
            .order_by(WorkerRow.id)
        ).all()
        if len(rows) < count:
            rng = np.random.default_rng([project.config.simulation.seed, len(rows)])
            for worker in draw_workers(project.config.simulation, count - len(rows), rng, start=len(rows)):
                row = WorkerRow(
                    project_id=project.id,
                    platform="simulated",
                    external_id=worker.external_id,
                    attributes=worker.as_attributes(),
                )
                session.add(row)
                rows.append(row)
            session.flush()
        return [(row.id, SimulatedWorker.from_attributes(row.attributes)) for row in rows[:count]]


class _Oracles:
    """Ground-truth coverage per image, loaded on first use."""

    def __init__(self, project: Project):
        with project.sessions() as session:
            self.sources = {
                image_id: (mask_path, width, height)
                for image_id, mask_path, width, height, _ in session.execute(
                    select(
                        ImageRow.id, ImageRow.mask_path, ImageRow.width, ImageRow.height, ImageRow.saliency_path
                    ).where(ImageRow.project_id == project.id, ImageRow.stage != "error")
                )
            }
        missing = [image_id for image_id, (mask_path, _, _) in self.sources.items() if not mask_path]
        if missing:
            raise SimulationError(
                f"{len(missing)} image(s) have no ground-truth mask; simulated workers answer from masks "
                "(give --masks DIR at init), or collect real answers with 'crowdpatch serve'"
            )
        with project.sessions() as session:
            self.saliency = dict(
                session.execute(
                    select(ImageRow.id, ImageRow.saliency_path).where(ImageRow.project_id == project.id)
                ).all()
            )
        self.threshold = project.config.saliency.threshold
        self.candidates = CandidateStore(project.directory, project.config)
        self.project = project
        self.cache: dict[int, CoverageOracle] = {}
        self.masks: dict[int, np.ndarray] = {}

    def __getitem__(self, image_id: int) -> CoverageOracle:
        if image_id not in self.cache:
            mask_path, width, height = self.sources[image_id]
            self.masks[image_id] = load_mask(Path(mask_path), (width, height))
            self.cache[image_id] = CoverageOracle(self.masks[image_id])
        return self.cache[image_id]

    def outline_iou(self, image_id: int, box: Box) -> float:
        """How well the saliency outline inside ``box`` matches the object there (IoU, ignore band left out)."""
        self[image_id]
        path = self.saliency.get(image_id)
        if not path:
            return 0.0
        cut = (slice(box.y0, box.y1), slice(box.x0, box.x1))
        outline = outline_mask(salient_pixels(path, self.threshold), box)[cut]
        return mask_iou(outline, self.masks[image_id][cut])

    def object_pixels(self, image_id: int) -> np.ndarray:
        self[image_id]
        return self.masks[image_id] == MASK_OBJECT

    def _spec(self, task_id: int) -> tuple[dict, str]:
        """A question's spec and its image's path."""
        with self.project.sessions() as session:
            spec, path = session.execute(
                select(TaskRow.spec, ImageRow.path)
                .join(ImageRow, ImageRow.id == TaskRow.image_id)
                .where(TaskRow.id == task_id)
            ).one()
        return dict(spec), path

    def candidate_ious(self, image_id: int, task_id: int) -> list[float]:
        """How well each candidate mask of a pick question matches the object (IoU)."""
        self[image_id]
        spec, path = self._spec(task_id)
        return [mask_iou(mask, self.masks[image_id]) for mask in self.candidates.masks(task_id, path, spec)]

    def correction_view(self, image_id: int, task_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What a correction question shows (its mask), the object, and where the truth is labelled."""
        self[image_id]
        spec, path = self._spec(task_id)
        truth = self.masks[image_id]
        return self.candidates.corrected(path, spec), truth == MASK_OBJECT, truth != MASK_IGNORE


def simulated_answer(
    assignment: Assignment, worker: SimulatedWorker, oracles: _Oracles, project: Project, rng: np.random.Generator
) -> tuple[Any, float]:
    """What ``worker`` answers to ``assignment``, and the human seconds it takes (modeled)."""
    time_model = project.config.time_model
    oracle = oracles[assignment.image_id]
    if assignment.kind == EXTREME:
        value = answer_extreme(worker, oracles.object_pixels(assignment.image_id), rng)
        median = time_model.box_extreme
    elif assignment.kind == CORRECT:
        value = answer_correction(worker, *oracles.correction_view(assignment.image_id, assignment.task_id), rng)
        median = time_model.correction_median(len(value["clicks"]))
    elif assignment.kind == PICK:
        ious = oracles.candidate_ious(assignment.image_id, assignment.task_id)
        value = answer_pick(worker, ious, rng)
        median = time_model.pick_median(len(ious))
    elif assignment.variant == "outline":
        value = "yes" if answer_outline(worker, oracles.outline_iou(assignment.image_id, assignment.box), rng) else "no"
        median = time_model.yes_no
    elif assignment.kind == "verify":
        value: Any = "yes" if answer_region(worker, oracle.recall(assignment.box), rng) else "no"
        median = time_model.yes_no
    elif assignment.kind == "grid":
        cells = grid_cells(assignment.box, assignment.grid_size or 1)
        shown = list(assignment.active_cells) if assignment.active_cells is not None else list(range(len(cells)))
        clicked = answer_grid(worker, [oracle.coverage(cells[i]) for i in shown], rng)
        value = {"cells": [shown[i] for i in clicked]}
        median = time_model.grid_median(len(shown))
    else:
        value = "yes" if answer_window(worker, oracle.coverage(assignment.box), rng) else "no"
        median = time_model.yes_no
    return value, answer_seconds(median, worker, time_model, rng)


def run_simulation(
    project: Project,
    workers: int | None = None,
    max_answers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SimulationReport:
    """Answer open questions until none is left (or ``max_answers``); resumable at any point.

    ``progress(answers_stored, open_questions)`` is called after every stored answer.
    """
    count = workers or project.config.simulation.workers
    oracles = _Oracles(project)
    crew = ensure_workers(project, count)
    with project.sessions() as session:
        done_before = (
            session.scalar(
                select(func.count()).select_from(AnswerRow).join(TaskRow).where(TaskRow.project_id == project.id)
            )
            or 0
        )
        clock = (
            session.scalar(
                select(func.max(AnswerRow.answered_at)).join(TaskRow).where(TaskRow.project_id == project.id)
            )
            or 0.0
        )
    rng = np.random.default_rng([project.config.simulation.seed, done_before, 1])
    simulated = SimulatedClock(clock)
    dispatcher = MemoryDispatcher(project.sessions, project.id, project.config, rng, simulated)
    events: list[tuple[float, int]] = [(clock, index) for index in range(len(crew))]
    heapq.heapify(events)
    in_hand: dict[int, tuple[Assignment, Any, float]] = {}
    idle: list[int] = []
    stored = 0
    rejected = 0
    end = clock
    while events:
        now, index = heapq.heappop(events)
        simulated.now = now
        worker_id, worker = crew[index]
        if index in in_hand:
            assignment, value, seconds = in_hand.pop(index)
            try:
                dispatcher.submit(
                    worker_id,
                    assignment.task_id,
                    value,
                    client_id=f"{worker.external_id}:{assignment.task_id}",
                    seconds=seconds,
                    time_source="modeled",
                )
            except AnswerRejected:
                # Too late: the lease expired and another worker's answer took its place.
                rejected += 1
            else:
                stored += 1
            end = max(end, now)
            if progress:
                progress(stored, len(dispatcher.open))
            for waiting in idle:
                heapq.heappush(events, (now, waiting))
            idle.clear()
        if max_answers is not None and stored + len(in_hand) >= max_answers:
            continue
        assignment = dispatcher.next_task(worker_id)
        if assignment is None:
            idle.append(index)
            continue
        value, seconds = simulated_answer(assignment, worker, oracles, project, rng)
        in_hand[index] = (assignment, value, seconds)
        heapq.heappush(events, (now + seconds, index))
    return SimulationReport(
        answers=stored,
        workers=len(crew),
        banned=len(dispatcher.banned),
        latency_seconds=end - clock,
        open_questions=len(dispatcher.open),
        rejected_late=rejected,
    )
