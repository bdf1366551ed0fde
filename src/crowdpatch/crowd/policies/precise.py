"""The precise policy: localize the target at its own scale, then let a worker pick its mask.

A grid over a saliency region is only as fine as its cells, and on photos where the target is
not the most salient thing the region is far larger than the object. This policy asks instead:

1. **Outline check** (a learned saliency backend only): "does this outline cover the <target>
   well?" about the whole image's saliency mask (1.6 s). One "no" rejects it (that costs only the
   extreme points it would have saved); a "yes" must be sure (``region_confidence``), since the
   mask rides on it. Accepted, the outline is the mask to correct.
2. **Extreme points**: the target's top, bottom, left and right ends, clicked in that order
   (Papadopoulos et al. 2017, about 7 s). They put the target in a box of its own size and touch
   its boundary four times. Points out of order (clicked anywhere) are asked again, up to
   ``[adaptive] max_votes`` answers. "Not here", twice, means the image shows no target: no mask,
   and the image is reported so.
3. **Pick**: the candidate masks computed from the points (GrabCut seeded by them; the saliency
   backend run again on their crop, when it is a learned one) are shown side by side, and a worker
   picks the one closest to the target, or none (1.6 s per outline shown).
4. **Corrections**, paid only at the errors: "click where the outline is wrong" (a yes/no's 1.6 s
   plus 2.4 s per click; Bearman et al. 2016). A click outside the mask marks object, inside it
   background, and GrabCut redraws the mask with every click as a seed. Another worker judges the
   result, up to ``[precise] correction_rounds``; "fits" ends them.
5. **Fallbacks**: when no candidate is on the target, the points may have come from a careless worker, so
   another worker clicks them once more; when that fails too, the adaptive policy's grid is asked
   over the points' padded box, at the object's scale.

Image-level questions hang on one "whole" region per image (saliency clusters are not verified).
The adaptive policy's budget, posteriors and grid follow-ups apply unchanged.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crowdpatch.boxes import Box
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.answer_checks import in_order
from crowdpatch.crowd.closing import close, lock_image
from crowdpatch.crowd.kinds import CORRECT, EXTREME, NO, OUTLINE, PICK, YES
from crowdpatch.crowd.policies.adaptive import AdaptivePolicy
from crowdpatch.crowd.policies.base import POLICIES, AnswerOutcome
from crowdpatch.crowd.questions import (
    QuestionFacts,
    add_correct_task,
    add_extreme_task,
    add_outline_task,
    add_pick_task,
)
from crowdpatch.masks.candidates import (
    CONTEXT,
    CROP_SALIENCY,
    EDGES,
    GRABCUT,
    SALIENCY_OUTLINE,
    extreme_points_of,
    padded,
    points_box,
)
from crowdpatch.saliency.outline import outline_mask, salient_pixels
from crowdpatch.store.models import ImageRow, RegionRow, TaskRow

LEARNED_BACKENDS = ("csnet", "onnx")
"""Saliency backends whose map is worth showing as an outline or a candidate (models trained for object masks)."""

EXTREME_ATTEMPTS = 2
"""Extreme-point questions per image before the grid takes over (the first points may be a careless worker's)."""

ABSENT, NONE_FITS = "absent", "none"
"""Decisions: an extreme question whose workers say the image shows no target; a pick where no candidate fits."""

FITS, CORRECTED = "fits", "corrected"
"""Decisions of a correction round: no click (the outline fits), or clicks on its errors."""

NOT_HERE_VOTES = 2
"""Answers of "not here" that decide an image shows no target (one may be a worker who did not look)."""

FALLBACK_PAD = 0.1
"""The grid fallback's region: the points' box grown by this share of its sides."""


def candidate_names(config: ProjectConfig, image_id: int = 0) -> list[str]:
    """The candidates a pick shows: GrabCut from the box and along edges always, saliency on the crop only from a
    learned backend (a spectral map on a crop is rarely an object mask). Their order turns from image to image,
    so a worker who always takes the first one does not always take the same method's."""
    names = [GRABCUT, EDGES] + ([CROP_SALIENCY] if config.saliency.backend in LEARNED_BACKENDS else [])
    turn = image_id % len(names)
    return names[turn:] + names[:turn]


def whole(image: ImageRow) -> Box:
    return Box.whole(image.width, image.height)


@POLICIES.register("precise")
class PrecisePolicy(AdaptivePolicy):
    """Outline check, extreme points, a pick among candidate masks; the grid only as a fallback (module docstring)."""

    verifies_clusters = False

    def region_questions(
        self, session: Session, project_id: int, image_id: int, region: RegionRow, config: ProjectConfig
    ) -> list[str]:
        if region.source != "whole":
            left = self._left(session, image_id, config)
            grid = self._grid(session, project_id, image_id, region, config, left, "no candidate fitted: a grid")
            return [grid.kind] if grid is not None else []
        image = session.get(ImageRow, image_id)
        box = Box.from_list(region.box)
        if (
            config.saliency.backend in LEARNED_BACKENDS
            and self._outline_worth_asking(session, project_id, image, box, config)
            and self._left(session, image_id, config) >= config.time_model.yes_no
        ):
            return [add_outline_task(session, project_id, image_id, region, box).kind]
        return [self._extreme(session, project_id, image_id, region, 1, f"where is the {config.target}?").kind]

    def _extreme(
        self, session: Session, project_id: int, image_id: int, region: RegionRow, attempt: int, why: str
    ) -> TaskRow:
        return add_extreme_task(session, project_id, image_id, region, attempt, why)

    # -- answers -------------------------------------------------------------------------------

    def after_answer(
        self, session: Session, config: ProjectConfig, question: QuestionFacts, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        lock_image(session, question.image_id)
        if question.kind == EXTREME:
            return self._after_extreme(session, config, question, answers)
        if question.kind == PICK:
            return self._after_pick(session, config, question, answers)
        if question.kind == CORRECT:
            return self._after_correction(session, config, question, answers)
        if question.kind == OUTLINE:
            return self._after_outline(session, config, question, answers)
        return super().after_answer(session, config, question, answers)

    def _after_outline(
        self, session: Session, config: ProjectConfig, question: QuestionFacts, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        p = self._posterior(session, config, question, answers)
        sure = max(p, 1 - p) >= config.adaptive.region_confidence
        # A rejection costs only the extreme points the outline would have saved: one answer against it decides.
        # An acceptance has the whole mask ride on it (corrections fix edges, not a wrong object): it must be sure.
        if p >= 0.5 and not sure and len(answers) < config.adaptive.max_votes:
            return AnswerOutcome(False, len(answers) + 1)
        decision = YES if p >= 0.5 else NO

        def follow() -> int:
            if decision == YES:
                return self._correct_outline(session, config, question)
            region = session.get(RegionRow, question.region_id)
            self._extreme(
                session, question.project_id, question.image_id, region, 1, "the saliency outline was rejected"
            )
            return 1

        return AnswerOutcome(True, question.votes_wanted, close(session, question, decision, follow))

    def _correct_outline(self, session: Session, config: ProjectConfig, question: QuestionFacts) -> int:
        """An accepted outline's errors are clicked too, as a picked candidate's are (seen at its own scale)."""
        if config.precise.correction_rounds < 1:
            return 0
        image = session.get(ImageRow, question.image_id)
        outline = outline_mask(salient_pixels(image.saliency_path, config.saliency.threshold), whole(image))
        points = extreme_points_of(outline)
        if points is None:
            return 0
        view = padded(points_box(points, image.width, image.height), CONTEXT, image.width, image.height)
        task = session.get(TaskRow, question.id)
        add_correct_task(session, task, SALIENCY_OUTLINE, [], outline=(points, view, image.saliency_path))
        return 1

    def _after_extreme(
        self, session: Session, config: ProjectConfig, question: QuestionFacts, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        pointed = [value["points"] for _, value in answers if isinstance(value, dict) and "points" in value]
        ordered = [points for points in pointed if in_order(points)]
        if not pointed:
            if len(answers) < NOT_HERE_VOTES:
                return AnswerOutcome(False, len(answers) + 1)
            return AnswerOutcome(True, question.votes_wanted, close(session, question, ABSENT))
        if not ordered and len(answers) < config.adaptive.max_votes:
            # Points out of order are what a worker clicking anywhere gives: someone else clicks them again.
            return AnswerOutcome(False, len(answers) + 1)
        points = [[float(x), float(y)] for x, y in (ordered or pointed)[-1]]

        def follow() -> int:
            extreme = session.get(TaskRow, question.id)
            image = session.get(ImageRow, question.image_id)
            view = padded(points_box(points, image.width, image.height), CONTEXT, image.width, image.height)
            names = candidate_names(config, question.image_id)
            reason = f"{len(names)} candidate mask(s) from the extreme points: which fits?"
            add_pick_task(session, extreme, points, view, names, reason)
            return 1

        return AnswerOutcome(True, question.votes_wanted, close(session, question, "points", follow))

    def _after_pick(
        self, session: Session, config: ProjectConfig, question: QuestionFacts, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        pick = session.get(TaskRow, question.id)
        names = list(pick.spec["candidates"])
        choices = [value.get("choice") for _, value in answers if isinstance(value, dict)]
        chosen = [c for c in choices if isinstance(c, int) and 0 <= c < len(names)]
        if not chosen and len(answers) < NOT_HERE_VOTES:
            # "None fits" sends the image to a costlier path: a second opinion first.
            return AnswerOutcome(False, len(answers) + 1)
        if chosen:
            best = names[max(set(chosen), key=lambda c: (chosen.count(c), -chosen.index(c)))]

            def correct() -> int:
                if config.precise.correction_rounds < 1:
                    return 0
                add_correct_task(session, pick, best, [])
                return 1

            return AnswerOutcome(True, question.votes_wanted, close(session, question, best, correct))

        def follow() -> int:
            image = session.get(ImageRow, question.image_id)
            attempts = session.scalar(
                select(func.count()).where(TaskRow.image_id == question.image_id, TaskRow.kind == EXTREME)
            )
            region = session.get(RegionRow, question.region_id)
            if attempts < EXTREME_ATTEMPTS:
                reason = "no candidate fitted: the target's ends once more, by another worker"
                self._extreme(session, question.project_id, question.image_id, region, attempts + 1, reason)
                return 1
            box = padded(
                points_box(pick.spec["points"], image.width, image.height), FALLBACK_PAD, image.width, image.height
            )
            fallback = RegionRow(image_id=image.id, source="extreme", box=box.as_list(), verdict="accepted")
            session.add(fallback)
            session.flush()
            return len(self.region_questions(session, question.project_id, image.id, fallback, config))

        return AnswerOutcome(True, question.votes_wanted, close(session, question, NONE_FITS, follow))

    def _after_correction(
        self, session: Session, config: ProjectConfig, question: QuestionFacts, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        task = session.get(TaskRow, question.id)
        clicks = [[float(x), float(y)] for x, y in answers[-1][1]["clicks"]]
        if not clicks:
            return AnswerOutcome(True, question.votes_wanted, close(session, question, FITS))
        rounds = [*task.spec["rounds"], clicks]
        task.spec = {**task.spec, "answered": clicks}

        def next_round() -> int:
            if len(rounds) >= config.precise.correction_rounds:
                return 0
            source = session.get(TaskRow, task.parent_id)
            spec = task.spec
            outline = (spec["points"], Box.from_list(task.box), spec["saliency"]) if "saliency" in spec else None
            add_correct_task(session, source, spec["candidate"], rounds, outline)
            return 1

        return AnswerOutcome(True, question.votes_wanted, close(session, question, CORRECTED, next_round))
