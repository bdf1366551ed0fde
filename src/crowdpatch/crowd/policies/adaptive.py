"""The adaptive policy: buy an answer only where it is expected to change the mask.

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

Every question records in ``reason`` why it was asked. The model of the answers is :mod:`.posteriors`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crowdpatch.boxes import Box
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.closing import close, lock_image
from crowdpatch.crowd.kinds import CELL, GOLD, GRID, NO, OUTLINE, POLYGON, VERIFY, YES
from crowdpatch.crowd.policies.base import POLICIES, AnswerOutcome, ask_verified_regions
from crowdpatch.crowd.policies.fixed import FixedPolicy
from crowdpatch.crowd.policies.posteriors import (
    cell_posteriors,
    grid_evidence,
    grid_posteriors,
    worker_accuracies,
    yes_posterior,
)
from crowdpatch.crowd.questions import (
    QuestionFacts,
    add_cell_task,
    add_grid_round,
    add_grid_task,
    add_outline_task,
    cell_index,
    cell_key,
    grid_resolution,
)
from crowdpatch.saliency.outline import outline_mask, salient_pixels
from crowdpatch.store.models import AnswerRow, ImageRow, RegionRow, TaskRow

FOLLOW_UP_VOTES = 1.5
"""Expected answers one single-cell follow-up costs (a second one is bought when the first is not enough)."""

MIN_EXPECTED_CHANGE = 0.02
"""A grid's follow-ups stop when the pixels expected to flip are below this share of the region."""

MIN_GRID = 2

PLAUSIBLE_CLICKS = (0.02, 0.9)
"""A lone grid vote that clicks fewer or more than these shares of the cells is not trusted alone: the
region is padded around a salient cluster, so an honest worker almost never clicks all of it (an
always-"yes" spammer does) nor none of it (the region was verified to hold the target)."""


def spent_seconds(session: Session, image_id: int) -> float:
    """Human seconds already spent on an image's pipeline questions (gold and polygons aside)."""
    return float(
        session.scalar(
            select(func.coalesce(func.sum(AnswerRow.seconds), 0.0))
            .join(TaskRow, TaskRow.id == AnswerRow.task_id)
            .where(TaskRow.image_id == image_id, TaskRow.kind.notin_((GOLD, POLYGON)))
        )
        or 0.0
    )


@POLICIES.register("adaptive")
class AdaptivePolicy:
    """Questions bought one answer at a time where they are expected to change the mask (module docstring)."""

    verifies_clusters = True

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

    def region_questions(
        self, session: Session, project_id: int, image_id: int, region: RegionRow, config: ProjectConfig
    ) -> list[str]:
        image = session.get(ImageRow, image_id)
        box = Box.from_list(region.box)
        left = self._left(session, image_id, config)
        if self._outline_worth_asking(session, project_id, image, box, config) and left >= config.time_model.yes_no:
            return [add_outline_task(session, project_id, image_id, region, box).kind]
        grid = self._grid(session, project_id, image_id, region, config, left, "grid over the verified region")
        return [grid.kind] if grid is not None else []

    def _outline_worth_asking(
        self, session: Session, project_id: int, image: ImageRow, box: Box, config: ProjectConfig
    ) -> bool:
        adaptive = config.adaptive
        if not adaptive.outline or not image.saliency_path:
            return False
        salient = outline_mask(salient_pixels(image.saliency_path, config.saliency.threshold), box)
        if not salient.any():
            return False
        decided = session.execute(
            select(TaskRow.decision, func.count())
            .where(TaskRow.project_id == project_id, TaskRow.kind == OUTLINE, TaskRow.state == "done")
            .group_by(TaskRow.decision)
        ).all()
        counts = dict(decided)
        seen = sum(counts.values())
        if seen < adaptive.outline_min_seen:
            return True
        return counts.get(YES, 0) / seen >= adaptive.outline_min_rate

    def _grid(
        self,
        session: Session,
        project_id: int,
        image_id: int,
        region: RegionRow,
        config: ProjectConfig,
        left: float,
        why: str,
    ) -> TaskRow | None:
        """The first look: one coarse grid vote, read at full resolution.

        ``first_look`` cells per side, fewer if the budget needs.
        """
        box = Box.from_list(region.box)
        resolution = min(config.patches.grid_size, box.width, box.height)
        for size in range(min(config.adaptive.first_look, resolution), MIN_GRID - 1, -1):
            if config.time_model.grid_median(size * size) <= left:
                task = add_grid_task(session, project_id, region, config, size=size, votes=1)
                task.spec = {"resolution": resolution}
                task.reason = (
                    f"{why}: a first look, grid {size} x {size}, one vote"
                    f" (read on the {resolution} x {resolution} lattice)"
                )
                return task
        return None

    # -- answers -------------------------------------------------------------------------------

    def after_answer(
        self, session: Session, config: ProjectConfig, question: QuestionFacts, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        lock_image(session, question.image_id)
        if question.kind == GRID:
            return self._after_grid(session, config, question, answers)
        if question.kind in (VERIFY, OUTLINE, CELL):
            return self._after_yes_no(session, config, question, answers)
        # Patch windows (a project switched from 'fixed') and polygons keep the fixed rule.
        return FixedPolicy().after_answer(session, config, question, answers)

    def _posterior(
        self, session: Session, config: ProjectConfig, question: QuestionFacts, answers: list[tuple[int, Any]]
    ) -> float:
        """P(yes): a cell's from its grid family (whose evidence holds its own answers), others' from a flat prior."""
        if question.kind == CELL:
            task = session.get(TaskRow, question.id)
            root = session.get(TaskRow, task.parent_id)
            return float(grid_posteriors(session, config, root)[cell_index(task.key)])
        accuracy = worker_accuracies(session, {w for w, _ in answers}, config)
        return yes_posterior(0.5, [(accuracy[w], v == YES) for w, v in answers])

    def _after_yes_no(
        self, session: Session, config: ProjectConfig, question: QuestionFacts, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        p = self._posterior(session, config, question, answers)
        confidence = config.adaptive.confidence if question.kind == CELL else config.adaptive.region_confidence
        sure = max(p, 1 - p) >= confidence
        affordable = self._left(session, question.image_id, config) >= config.time_model.yes_no
        if not sure and len(answers) < config.adaptive.max_votes and affordable:
            return AnswerOutcome(False, len(answers) + 1)
        decision = YES if p >= 0.5 else NO

        def follow() -> int:
            if question.kind == VERIFY:
                return ask_verified_regions(session, self, config, question.project_id, question.image_id)
            if question.kind == OUTLINE and decision != YES:
                region = session.get(RegionRow, question.region_id)
                left = self._left(session, question.image_id, config)
                grid = self._grid(
                    session,
                    question.project_id,
                    question.image_id,
                    region,
                    config,
                    left,
                    "the saliency outline was rejected",
                )
                return int(grid is not None)
            return 0

        created = close(session, question, decision, follow)
        return AnswerOutcome(True, question.votes_wanted, created)

    def _after_grid(
        self, session: Session, config: ProjectConfig, question: QuestionFacts, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        task = session.get(TaskRow, question.id)
        root = task if task.parent_id is None else session.get(TaskRow, task.parent_id)
        if task.parent_id is None and len(answers) == 1:
            shown = (task.grid_size or 1) ** 2
            clicked = len(set(answers[0][1].get("cells", []))) / shown
            left = self._left(session, task.image_id, config)
            if (
                not PLAUSIBLE_CLICKS[0] <= clicked <= PLAUSIBLE_CLICKS[1]
                and config.time_model.grid_median(shown) <= left
            ):
                task.reason += f"; vote 2: the first vote clicked {clicked:.0%} of the cells, not trusted alone"
                return AnswerOutcome(False, 2)
        created = close(session, question, None, lambda: len(self._follow_ups(session, config, root)))
        return AnswerOutcome(True, question.votes_wanted, created)

    def _follow_ups(self, session: Session, config: ProjectConfig, root: TaskRow) -> list[TaskRow]:
        """What the family's answers leave uncertain, bought the cheapest way: a boundary round or single cells."""
        evidence, shares, cells = grid_evidence(session, config, root)
        resolution = grid_resolution(root)
        p = cell_posteriors(evidence, shares, resolution, config)
        doubt = np.minimum(p, 1 - p)
        uncertain = [int(i) for i in np.argsort(-doubt, kind="stable") if doubt[i] > 1 - config.adaptive.confidence]
        expected_change = sum(doubt[i] * cells[i].area for i in uncertain) / Box.from_list(root.box).area
        if not uncertain or expected_change < MIN_EXPECTED_CHANGE:
            return []
        time_model = config.time_model
        left = self._left(session, root.image_id, config)
        asked = dict(
            session.execute(
                select(TaskRow.kind, func.count()).where(TaskRow.parent_id == root.id).group_by(TaskRow.kind)
            ).all()
        )
        single_cost = FOLLOW_UP_VOTES * time_model.yes_no
        round_cost = time_model.grid_median(len(uncertain))
        rounds = asked.get(GRID, 0)
        if len(uncertain) * single_cost > round_cost and rounds < config.adaptive.max_rounds and round_cost <= left:
            reason = (
                f"boundary round {rounds + 1} of grid {root.id}: {len(uncertain)} cells still uncertain "
                f"(a screen of them, {round_cost:.0f} s, is cheaper than {len(uncertain)} single questions)"
            )
            return [add_grid_round(session, root, rounds + 1, resolution, sorted(uncertain), reason)]
        budget_cells = int(left // single_cost) if math.isfinite(left) else len(uncertain)
        room = max(0, config.adaptive.max_cell_questions - asked.get(CELL, 0))
        already = set(session.scalars(select(TaskRow.key).where(TaskRow.parent_id == root.id, TaskRow.kind == CELL)))
        created = []
        for index in uncertain[: min(room, budget_cells)]:
            if cell_key(index) in already:
                continue
            reason = (
                f"cell {index} of grid {root.id} uncertain"
                f" (P(object) = {p[index]:.2f} from answers, saliency and neighbours)"
            )
            created.append(add_cell_task(session, root, index, cells[index], reason))
        return created
