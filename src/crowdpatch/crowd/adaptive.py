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
from sqlalchemy.orm import Session, aliased

from crowdpatch.boxes import Box
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.decisions import YES, FixedScheme, close_question, finish_image_if_done, lock_image
from crowdpatch.crowd.planners import AnswerOutcome, QuestionFacts
from crowdpatch.crowd.tasks import add_grid_task
from crowdpatch.saliency.outline import cell_shares, outline_mask, salient_pixels
from crowdpatch.aggregate.votes import grid_votes
from crowdpatch.patches.lattice import grid_cells
from crowdpatch.store.models import AnswerRow, ImageRow, RegionRow, TaskRow, WorkerRow

FOLLOW_UP_VOTES = 1.5
"""Expected answers one single-cell follow-up costs (a second one is bought when the first is not enough)."""

MIN_EXPECTED_CHANGE = 0.02
"""A grid's follow-ups stop when the pixels expected to flip are below this share of the region."""

MIN_GRID = 2

PLAUSIBLE_CLICKS = (0.02, 0.9)
"""A lone grid vote that clicks fewer or more than these shares of the cells is not trusted alone: the
region is padded around a salient cluster, so an honest worker almost never clicks all of it (an
always-"yes" spammer does) nor none of it (the region was verified to hold the target)."""


def logit(p: float | np.ndarray) -> Any:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def sigmoid(x: float | np.ndarray) -> Any:
    return 1.0 / (1.0 + np.exp(-x))


YES_NO_KINDS = ("verify", "outline", "cell", "patch")


def worker_accuracies(session: Session, worker_ids: set[int], config: ProjectConfig) -> dict[int, float]:
    """Each worker's accuracy from its gold record and its agreement with its peers, shrunk toward the honest prior.

    Gold comes rarely (a few percent of questions), while a spammer answers fast and often; so every
    decided yes/no question where the *other* workers agreed among themselves counts too, as one
    observation of whether this worker agrees. ``prior_weight`` pseudo-answers at
    ``crowd.honest_gold_accuracy`` keep a newcomer's weight at the honest prior.
    """
    if not worker_ids:
        return {}
    honest = config.crowd.honest_gold_accuracy
    weight = config.adaptive.prior_weight
    correct = {w: 0.0 for w in worker_ids}
    seen = {w: 0.0 for w in worker_ids}
    for worker_id, gold_seen, gold_correct in session.execute(
        select(WorkerRow.id, WorkerRow.gold_seen, WorkerRow.gold_correct).where(WorkerRow.id.in_(worker_ids))
    ):
        seen[worker_id] += gold_seen or 0
        correct[worker_id] += gold_correct or 0
    mine, theirs, peer = aliased(AnswerRow), aliased(AnswerRow), aliased(WorkerRow)
    others: dict[tuple[int, int], tuple[Any, set[Any]]] = {}
    for worker_id, task_id, my_value, their_value in session.execute(
        select(mine.worker_id, mine.task_id, mine.value, theirs.value)
        .join(TaskRow, TaskRow.id == mine.task_id)
        .join(theirs, (theirs.task_id == mine.task_id) & (theirs.worker_id != mine.worker_id))
        .join(peer, peer.id == theirs.worker_id)
        .where(mine.worker_id.in_(worker_ids), TaskRow.state == "done", TaskRow.kind.in_(YES_NO_KINDS), peer.banned.is_(False))
    ):
        others.setdefault((worker_id, task_id), (my_value, set()))[1].add(their_value)
    for (worker_id, _), (my_value, values) in others.items():
        if len(values) == 1:
            seen[worker_id] += 1
            correct[worker_id] += float(my_value in values)
    return {w: float(np.clip((correct[w] + weight * honest) / (seen[w] + weight), 0.5, 0.99)) for w in worker_ids}


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
        """The image's unspent budget, in median seconds: answer times are lognormal (``time_model.sigma``),
        so a question costs its median x exp(sigma^2 / 2) on average, and the remainder is scaled down by that."""
        budget = config.adaptive.budget_seconds
        if budget is None:
            return math.inf
        return (budget - spent_seconds(session, image_id)) / math.exp(config.time_model.sigma**2 / 2)

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
        """The first look: one coarse grid vote (``first_look`` cells per side, fewer if the budget needs), read at full resolution."""
        box = Box.from_list(region.box)
        resolution = min(config.patches.grid_size, box.width, box.height)
        for size in range(min(config.adaptive.first_look, resolution), MIN_GRID - 1, -1):
            if config.time_model.grid_median(size * size) <= left:
                task = add_grid_task(session, project_id, image_id, region, config, size=size, votes_wanted=1)
                task.spec = {"resolution": resolution}
                task.reason = f"{why}: a first look, grid {size} x {size}, one vote (read on the {resolution} x {resolution} lattice)"
                return task
        return None

    # -- answers -------------------------------------------------------------------------------

    def quick_outcome(
        self, session: Session, config: ProjectConfig, question: QuestionFacts, values: list[Any]
    ) -> AnswerOutcome | None:
        """Never: every answer moves the posterior, which :meth:`after_answer` reads from the store."""
        return None

    def after_answer(
        self, session: Session, project_id: int, config: ProjectConfig, task: TaskRow, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        lock_image(session, task.image_id)
        if task.kind == "grid":
            return self._after_grid(session, project_id, config, task, answers)
        if task.kind in ("verify", "outline", "cell"):
            return self._after_yes_no(session, project_id, config, task, answers)
        # Patch windows (a project switched from 'fixed') and polygons keep the fixed rule.
        return FixedScheme().after_answer(session, project_id, config, task, answers)

    def _posterior(self, session: Session, config: ProjectConfig, task: TaskRow, answers: list[tuple[int, Any]]) -> float:
        """P(yes): a cell's comes from its grid family (whose evidence holds the cell's own answers), others from a flat prior."""
        if task.kind == "cell":
            root = session.get(TaskRow, task.parent_id)
            return float(self.grid_posteriors(session, config, root)[cell_index(task.key)])
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
    #
    # A region's grid questions form a family under its first-look grid (the root): boundary rounds
    # (grid screens where only the uncertain cells are clickable) and single-cell follow-ups. All
    # their votes are read on one lattice of ``resolution`` x ``resolution`` cells.

    def _grid_evidence(self, session: Session, config: ProjectConfig, root: TaskRow) -> tuple[np.ndarray, np.ndarray, list[Box]]:
        """Summed answer log-likelihood ratios per fine cell over the whole family, the saliency shares, the fine cells."""
        resolution = grid_resolution(root)
        cells = grid_cells(Box.from_list(root.box), resolution)
        family = session.execute(
            select(TaskRow.id, TaskRow.kind, TaskRow.key, TaskRow.grid_size, TaskRow.spec, AnswerRow.worker_id, AnswerRow.value)
            .join(AnswerRow, AnswerRow.task_id == TaskRow.id)
            .join(WorkerRow, WorkerRow.id == AnswerRow.worker_id)
            .where((TaskRow.id == root.id) | (TaskRow.parent_id == root.id), WorkerRow.banned.is_(False))
        ).all()
        accuracy = worker_accuracies(session, {row.worker_id for row in family}, config)
        evidence = np.zeros(resolution * resolution)
        for row in family:
            weight = vote_weight(accuracy[row.worker_id])
            if row.kind == "cell":
                evidence[cell_index(row.key)] += weight * (1 if row.value == YES else -1)
                continue
            for cell, label in grid_votes(row.value, row.grid_size or 1, row.spec):
                coarse = (row.grid_size or 1) < resolution
                evidence[cell] += weight * (config.adaptive.coarse_weight if coarse else 1.0) * (1 if label else -1)
        image = session.get(ImageRow, root.image_id)
        if image.saliency_path:
            shares = cell_shares(salient_pixels(image.saliency_path, config.saliency.threshold), cells)
        else:
            shares = np.full(resolution * resolution, 0.5)
        return evidence, shares, cells

    def grid_posteriors(self, session: Session, config: ProjectConfig, root: TaskRow) -> np.ndarray:
        """P(object) per fine cell of a grid family, from every answer so far."""
        evidence, shares, _ = self._grid_evidence(session, config, root)
        return cell_posteriors(evidence, shares, grid_resolution(root), config)

    def _after_grid(
        self, session: Session, project_id: int, config: ProjectConfig, task: TaskRow, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        root = task if task.parent_id is None else session.get(TaskRow, task.parent_id)
        if task.parent_id is None and len(answers) == 1:
            shown = (task.grid_size or 1) ** 2
            clicked = len(set(answers[0][1].get("cells", []))) / shown
            left = self._left(session, task.image_id, config)
            if not PLAUSIBLE_CLICKS[0] <= clicked <= PLAUSIBLE_CLICKS[1] and config.time_model.grid_median(shown) <= left:
                task.reason += f"; vote 2: the first vote clicked {clicked:.0%} of the cells, not trusted alone"
                return AnswerOutcome(False, 2)
        task.state = "done"
        session.flush()
        created = self._follow_ups(session, config, root)
        finish_image_if_done(session, task.image_id)
        return AnswerOutcome(True, task.votes_wanted, created)

    def _follow_ups(self, session: Session, config: ProjectConfig, root: TaskRow) -> list[TaskRow]:
        """What the family's answers leave uncertain, bought the cheapest way: a boundary round or single cells."""
        evidence, shares, cells = self._grid_evidence(session, config, root)
        resolution = grid_resolution(root)
        p = cell_posteriors(evidence, shares, resolution, config)
        doubt = np.minimum(p, 1 - p)
        uncertain = [int(i) for i in np.argsort(-doubt, kind="stable") if doubt[i] > 1 - config.adaptive.confidence]
        expected_change = sum(doubt[i] * cells[i].area for i in uncertain) / Box.from_list(root.box).area
        if not uncertain or expected_change < MIN_EXPECTED_CHANGE:
            return []
        time_model = config.time_model
        left = self._left(session, root.image_id, config)
        asked = session.execute(
            select(TaskRow.kind, func.count()).where(TaskRow.parent_id == root.id).group_by(TaskRow.kind)
        ).all()
        asked_count = dict(asked)
        single_cost = FOLLOW_UP_VOTES * time_model.yes_no
        round_cost = time_model.grid_median(len(uncertain))
        if len(uncertain) * single_cost > round_cost and asked_count.get("grid", 0) < config.adaptive.max_rounds and round_cost <= left:
            task = TaskRow(
                project_id=root.project_id,
                image_id=root.image_id,
                region_id=root.region_id,
                kind="grid",
                key=f"grid:{root.id}:round{asked_count.get('grid', 0) + 1}",
                level=2 + asked_count.get("grid", 0),
                box=root.box,
                grid_size=resolution,
                parent_id=root.id,
                votes_wanted=1,
                spec={"resolution": resolution, "active": sorted(uncertain)},
                reason=f"boundary round {asked_count.get('grid', 0) + 1} of grid {root.id}: {len(uncertain)} cells still uncertain "
                f"(a screen of them, {round_cost:.0f} s, is cheaper than {len(uncertain)} single questions)",
            )
            session.add(task)
            return [task]
        budget_cells = int(left // single_cost) if math.isfinite(left) else len(uncertain)
        room = max(0, config.adaptive.max_cell_questions - asked_count.get("cell", 0))
        already = set(session.scalars(select(TaskRow.key).where(TaskRow.parent_id == root.id, TaskRow.kind == "cell")))
        created = []
        for index in uncertain[: min(room, budget_cells)]:
            key = f"cell:{index}"
            if key in already:
                continue
            row = TaskRow(
                project_id=root.project_id,
                image_id=root.image_id,
                region_id=root.region_id,
                kind="cell",
                key=key,
                level=2,
                box=cells[index].as_list(),
                parent_id=root.id,
                votes_wanted=1,
                reason=f"cell {index} of grid {root.id} uncertain (P(object) = {p[index]:.2f} from answers, saliency and neighbours)",
            )
            session.add(row)
            created.append(row)
        return created


def cell_index(key: str) -> int:
    return int(key.split(":")[1])


def grid_resolution(task: TaskRow) -> int:
    """Cells per side of the lattice a grid's votes are read on."""
    return int((task.spec or {}).get("resolution") or task.grid_size or 1)
