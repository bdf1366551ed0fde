"""The paper's fixed scheme: verification first, then every accepted region's whole lattice (or grid screen).

A question wants ``[crowd] votes`` answers, or only two when the first two agree (``early_stop``);
then the majority decides it. A "yes" window is refined by its own lattice of half-size windows
until ``max_depth`` or ``min_side``; windows shared by neighbouring parents are asked once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.closing import close, create_children
from crowdpatch.crowd.kinds import GRID, PATCH, POLYGON, VERIFY, YES
from crowdpatch.crowd.policies.base import POLICIES, AnswerOutcome, ask_verified_regions
from crowdpatch.crowd.questions import QuestionFacts, add_first_windows, add_grid_task
from crowdpatch.crowd.votes import majority, votes_target
from crowdpatch.patches.lattice import first_level
from crowdpatch.store.models import RegionRow


@POLICIES.register("fixed")
class FixedPolicy:
    """Every accepted region gets its whole lattice (or grid), with fixed redundancy."""

    verifies_clusters = True

    def uses_early_stop(self, config: ProjectConfig) -> bool:
        return config.crowd.early_stop

    def first_votes(self, config: ProjectConfig) -> int:
        return config.crowd.votes

    def region_questions(
        self, session: Session, project_id: int, image_id: int, region: RegionRow, config: ProjectConfig
    ) -> list[str]:
        """The region's first questions, in the project's presentation: one grid screen, or the level-1 windows."""
        if config.patches.presentation == "grid":
            return [add_grid_task(session, project_id, region, config).kind]
        return add_first_windows(session, project_id, image_id, region, first_level(), config)

    def after_answer(
        self, session: Session, config: ProjectConfig, question: QuestionFacts, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        values = [value for _, value in answers]
        if len(values) < votes_target(values, question.votes_wanted, config.crowd.early_stop):
            return AnswerOutcome(False, question.votes_wanted)
        decision = None if question.kind in (GRID, POLYGON) else majority(values)
        created = close(session, question, decision, lambda: self._follow(session, config, question, decision))
        return AnswerOutcome(True, question.votes_wanted, created)

    def _follow(self, session: Session, config: ProjectConfig, question: QuestionFacts, decision: str | None) -> int:
        """What a closed question creates: a verified image's region questions, a "yes" window's children."""
        if question.kind == VERIFY:
            return ask_verified_regions(session, self, config, question.project_id, question.image_id)
        if question.kind == PATCH and decision == YES:
            return create_children(session, question, config)
        return 0
