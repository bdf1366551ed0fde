"""The adaptive planner: buy an answer only where it is expected to change the mask.

Human time is the cost, so every question is bought one answer at a time and only while it matters:

1. **Verification** of a saliency cluster wants one answer, then another only while the posterior
   (each answer weighted by its worker's gold-estimated accuracy) is not yet ``confidence`` sure.
2. **Outline check**: an accepted region first shows the thresholded saliency map itself, "does this
   outline cover the <target> well?". Accepted, the outline *is* the region's mask (a good learned
   saliency map often is). The project switches this question off once too few outlines pass.
3. **One grid vote**, then follow-ups only for the cells still uncertain after combining that vote
   with the saliency map and the cell's neighbours: a few single-cell yes/no questions when that
   is cheaper than another grid screen, else another grid vote, and nothing once the expected
   change of the mask is negligible.
4. **Budget**: with ``budget_seconds`` per image, nothing is asked that the image cannot afford;
   the grid shrinks to fit, and an unaffordable region keeps the saliency outline.

Every question records in ``reason`` why it was asked.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crowdpatch.boxes import Box
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.decisions import YES, close_question, finish_image_if_done
from crowdpatch.crowd.planners import AnswerOutcome
from crowdpatch.crowd.tasks import add_grid_task
from crowdpatch.masks.outline import cell_shares, outline_mask, salient_pixels
from crowdpatch.patches.lattice import grid_cells
from crowdpatch.store.models import AnswerRow, ImageRow, RegionRow, TaskRow, WorkerRow

FOLLOW_UP_VOTES = 1.5
"""Expected answers one single-cell follow-up costs (a second one is bought when the first is not enough)."""

MIN_EXPECTED_CHANGE = 0.02
"""A grid's follow-ups stop when the pixels expected to flip are below this share of the region."""

MIN_GRID = 2


def logit(p: float | np.ndarray) -> Any:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def sigmoid(x: float | np.ndarray) -> Any:
    return 1.0 / (1.0 + np.exp(-x))


def worker_accuracies(session: Session, worker_ids: set[int], config: ProjectConfig) -> dict[int, float]:
    """Each worker's accuracy: its gold record, shrunk toward the honest accuracy by ``prior_weight`` pseudo-answers."""
    if not worker_ids:
        return {}
    honest = config.crowd.honest_gold_accuracy
    weight = config.adaptive.prior_weight
    rows = session.execute(select(WorkerRow.id, WorkerRow.gold_seen, WorkerRow.gold_correct).where(WorkerRow.id.in_(worker_ids)))
    return {
        worker_id: float(np.clip(((correct or 0) + weight * honest) / ((seen or 0) + weight), 0.5, 0.99))
        for worker_id, seen, correct in rows
    }


def vote_weight(accuracy: float) -> float:
    """Log-likelihood ratio one answer of a worker this accurate carries."""
    return math.log(accuracy / (1 - accuracy))


def yes_posterior(prior: float, votes: list[tuple[float, bool]]) -> float:
    """P(yes) after independent answers ``(accuracy, said_yes)``."""
    total = float(logit(prior)) + sum(vote_weight(acc) * (1 if yes else -1) for acc, yes in votes)
    return float(sigmoid(total))


def cell_posteriors(evidence: np.ndarray, shares: np.ndarray, size: int, config: ProjectConfig) -> np.ndarray:
    """P(object) per grid cell from the answers' log-likelihood ratios, the saliency map and the neighbours.

    ``evidence``: summed log-likelihood ratio of the answers per cell (row-major). The saliency share
    moves a cell's prior by up to ``saliency_prior``; the share of its 8 neighbours that the answers
    and the map call object moves it by up to ``neighbour_prior``: an isolated click far from the
    object, or a hole inside it, is doubted until someone confirms it.
    """
    adaptive = config.adaptive
    saliency_logit = logit(0.5 + adaptive.saliency_prior * (2 * shares - 1))
    first = (evidence + saliency_logit).reshape(size, size) > 0
    padded = np.pad(first.astype(float), 1)
    counts = np.pad(np.ones_like(first, dtype=float), 1)
    neighbours = sum(padded[1 + dy : 1 + dy + size, 1 + dx : 1 + dx + size] for dy in (-1, 0, 1) for dx in (-1, 0, 1)) - first
    present = sum(counts[1 + dy : 1 + dy + size, 1 + dx : 1 + dx + size] for dy in (-1, 0, 1) for dx in (-1, 0, 1)) - 1
    share = (neighbours / np.maximum(present, 1)).reshape(-1)
    neighbour_logit = logit(0.5 + adaptive.neighbour_prior * (2 * share - 1))
    return sigmoid(evidence + saliency_logit + neighbour_logit)


def spent_seconds(session: Session, image_id: int) -> float:
    """Human seconds already spent on an image's pipeline questions (gold and polygons aside)."""
    return float(
        session.scalar(
            select(func.coalesce(func.sum(AnswerRow.seconds), 0.0))
            .join(TaskRow, TaskRow.id == AnswerRow.task_id)
            .where(TaskRow.image_id == image_id, TaskRow.kind.notin_(("gold", "polygon")))
        )
        or 0.0
    )


class AdaptivePlanner:
    """Questions bought one answer at a time where they are expected to change the mask (module docstring)."""

    name = "adaptive"

    def uses_early_stop(self, config: ProjectConfig) -> bool:
        return False

    def first_votes(self, config: ProjectConfig) -> int:
        return 1

    # -- budget --------------------------------------------------------------------------------

    def _left(self, session: Session, image_id: int, config: ProjectConfig) -> float:
        budget = config.adaptive.budget_seconds
        return math.inf if budget is None else budget - spent_seconds(session, image_id)

    # -- the first questions of a region -------------------------------------------------------

    def region_questions(self, session: Session, project_id: int, image_id: int, region: RegionRow, config: ProjectConfig) -> list[TaskRow]:
        image = session.get(ImageRow, image_id)
        box = Box.from_list(region.box)
        left = self._left(session, image_id, config)
        if self._outline_worth_asking(session, project_id, image, box, config) and left >= config.time_model.yes_no:
            task = TaskRow(
                project_id=project_id,
                image_id=image_id,
                region_id=region.id,
                kind="outline",
                key="outline",
                level=0,
                box=box.as_list(),
                votes_wanted=1,
                reason="the saliency map's outline of the verified region may already be its mask",
            )
            session.add(task)
            return [task]
        grid = self._grid(session, project_id, image_id, region, config, left, "grid over the verified region")
        return [grid] if grid is not None else []

    def _outline_worth_asking(self, session: Session, project_id: int, image: ImageRow, box: Box, config: ProjectConfig) -> bool:
        adaptive = config.adaptive
        if not adaptive.outline or not image.saliency_path:
            return False
        salient = outline_mask(salient_pixels(image.saliency_path, config.saliency.threshold), box)
        if not salient.any():
            return False
        decided = session.execute(
            select(TaskRow.decision, func.count())
            .where(TaskRow.project_id == project_id, TaskRow.kind == "outline", TaskRow.state == "done")
            .group_by(TaskRow.decision)
        ).all()
        counts = dict(decided)
        seen = sum(counts.values())
        if seen < adaptive.outline_min_seen:
            return True
        return counts.get(YES, 0) / seen >= adaptive.outline_min_rate

    def _grid(self, session: Session, project_id: int, image_id: int, region: RegionRow, config: ProjectConfig, left: float, why: str) -> TaskRow | None:
        """One grid screen, as many cells as the budget affords (the project's grid size at most)."""
        box = Box.from_list(region.box)
        for size in range(min(config.patches.grid_size, box.width, box.height), MIN_GRID - 1, -1):
            if config.time_model.grid_median(size * size) <= left:
                task = add_grid_task(session, project_id, image_id, region, config, size=size, votes_wanted=1)
                task.reason = f"{why}: grid {size} x {size}, one vote first"
                return task
        return None

    # -- answers -------------------------------------------------------------------------------

    def after_answer(
        self, session: Session, project_id: int, config: ProjectConfig, task: TaskRow, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        if task.kind == "grid":
            return self._after_grid(session, project_id, config, task, answers)
        if task.kind in ("verify", "outline", "cell"):
            return self._after_yes_no(session, project_id, config, task, answers)
        # Patch windows (a project switched from 'fixed') and polygons keep the fixed rule.
        from crowdpatch.crowd.decisions import FixedScheme

        return FixedScheme().after_answer(session, project_id, config, task, answers)

    def _posterior(self, session: Session, config: ProjectConfig, task: TaskRow, answers: list[tuple[int, Any]]) -> float:
        """P(yes): a cell's comes from its grid (whose evidence holds the cell's own answers), others from a flat prior."""
        if task.kind == "cell":
            grid = session.get(TaskRow, task.parent_id)
            return float(self._grid_posteriors(session, config, grid)[int(task.key.split(":")[1])])
        accuracy = worker_accuracies(session, {w for w, _ in answers}, config)
        return yes_posterior(0.5, [(accuracy[w], v == YES) for w, v in answers])

    def _after_yes_no(
        self, session: Session, project_id: int, config: ProjectConfig, task: TaskRow, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        p = self._posterior(session, config, task, answers)
        confidence = config.adaptive.confidence if task.kind == "cell" else config.adaptive.region_confidence
        sure = max(p, 1 - p) >= confidence
        affordable = self._left(session, task.image_id, config) >= config.time_model.yes_no
        if not sure and len(answers) < config.adaptive.max_votes and affordable:
            return AnswerOutcome(False, len(answers) + 1)
        decision = YES if p >= 0.5 else "no"
        values = [v for _, v in answers]
        if task.kind == "verify":
            return AnswerOutcome(True, task.votes_wanted, close_question(session, project_id, config, task.id, values, decision))
        task.state, task.decision = "done", decision
        created: list[TaskRow] = []
        if task.kind == "outline" and decision != YES:
            region = session.get(RegionRow, task.region_id)
            left = self._left(session, task.image_id, config)
            grid = self._grid(session, project_id, task.image_id, region, config, left, "the saliency outline was rejected")
            created = [grid] if grid is not None else []
        finish_image_if_done(session, task.image_id)
        return AnswerOutcome(True, task.votes_wanted, created)

    # -- grids ---------------------------------------------------------------------------------

    def _grid_evidence(self, session: Session, config: ProjectConfig, grid: TaskRow) -> tuple[np.ndarray, np.ndarray, list[Box]]:
        """Summed answer log-likelihood ratios per cell (grid votes and single-cell follow-ups), the saliency shares, the cells."""
        size = grid.grid_size or 1
        cells = grid_cells(Box.from_list(grid.box), size)
        grid_answers = session.execute(
            select(AnswerRow.worker_id, AnswerRow.value)
            .join(WorkerRow, WorkerRow.id == AnswerRow.worker_id)
            .where(AnswerRow.task_id == grid.id, WorkerRow.banned.is_(False))
        ).all()
        follow_ups = session.execute(
            select(TaskRow.key, AnswerRow.worker_id, AnswerRow.value)
            .join(AnswerRow, AnswerRow.task_id == TaskRow.id)
            .join(WorkerRow, WorkerRow.id == AnswerRow.worker_id)
            .where(TaskRow.parent_id == grid.id, TaskRow.kind == "cell", WorkerRow.banned.is_(False))
        ).all()
        accuracy = worker_accuracies(session, {w for w, _ in grid_answers} | {w for _, w, _ in follow_ups}, config)
        evidence = np.zeros(size * size)
        for worker_id, value in grid_answers:
            signs = -np.ones(size * size)
            signs[list(set(value.get("cells", [])))] = 1
            evidence += vote_weight(accuracy[worker_id]) * signs
        for key, worker_id, value in follow_ups:
            evidence[int(key.split(":")[1])] += vote_weight(accuracy[worker_id]) * (1 if value == YES else -1)
        image = session.get(ImageRow, grid.image_id)
        if image.saliency_path:
            shares = cell_shares(salient_pixels(image.saliency_path, config.saliency.threshold), cells)
        else:
            shares = np.full(size * size, 0.5)
        return evidence, shares, cells

    def _grid_posteriors(self, session: Session, config: ProjectConfig, grid: TaskRow) -> np.ndarray:
        evidence, shares, _ = self._grid_evidence(session, config, grid)
        return cell_posteriors(evidence, shares, grid.grid_size or 1, config)

    def _after_grid(
        self, session: Session, project_id: int, config: ProjectConfig, task: TaskRow, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        evidence, shares, cells = self._grid_evidence(session, config, task)
        size = task.grid_size or 1
        p = cell_posteriors(evidence, shares, size, config)
        doubt = np.minimum(p, 1 - p)
        uncertain = [int(i) for i in np.argsort(-doubt) if doubt[i] > 1 - config.adaptive.confidence]
        region_area = Box.from_list(task.box).area
        expected_change = sum(doubt[i] * cells[i].area for i in uncertain) / region_area
        left = self._left(session, task.image_id, config)
        time_model = config.time_model
        grid_cost = time_model.grid_median(size * size)
        follow_up_cost = len(uncertain) * FOLLOW_UP_VOTES * time_model.yes_no
        if not uncertain or expected_change < MIN_EXPECTED_CHANGE:
            return self._close_grid(session, task, [], "")
        another_grid = (
            len(answers) < config.adaptive.max_votes
            and (len(uncertain) > config.adaptive.max_cell_questions or follow_up_cost > grid_cost)
            and grid_cost <= left
        )
        if another_grid:
            task.reason += f"; vote {len(answers) + 1}: {len(uncertain)} cells uncertain, another screen is cheaper than asking them one by one"
            return AnswerOutcome(False, len(answers) + 1)
        affordable = int(left // (FOLLOW_UP_VOTES * time_model.yes_no)) if math.isfinite(left) else len(uncertain)
        chosen = uncertain[: min(config.adaptive.max_cell_questions, affordable)]
        return self._close_grid(session, task, [(i, float(p[i]), cells[i]) for i in chosen], f"after {len(answers)} grid vote(s)")

    def _close_grid(self, session: Session, task: TaskRow, follow_ups: list[tuple[int, float, Box]], when: str) -> AnswerOutcome:
        task.state = "done"
        created = []
        for index, p, cell in follow_ups:
            row = TaskRow(
                project_id=task.project_id,
                image_id=task.image_id,
                region_id=task.region_id,
                kind="cell",
                key=f"cell:{index}",
                level=2,
                box=cell.as_list(),
                parent_id=task.id,
                votes_wanted=1,
                reason=f"cell {index} of grid {task.id} uncertain {when} (P(object) = {p:.2f} from answers, saliency and neighbours)",
            )
            session.add(row)
            created.append(row)
        finish_image_if_done(session, task.image_id)
        return AnswerOutcome(True, task.votes_wanted, created)
