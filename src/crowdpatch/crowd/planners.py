"""Question planners behind one interface, selected per project by name (``[crowd] planner``).

A planner decides two things, always inside the caller's transaction and only from the store, so the
in-process simulator and any number of server processes reach the same decisions:

* which questions an accepted region starts with (:meth:`QuestionPlanner.region_questions`), and
* what one more answer to a question sets in motion (:meth:`QuestionPlanner.after_answer`): the
  question is done (and maybe new questions are created), or it wants ``votes_wanted`` answers.

The engines that lease questions and store answers (:mod:`crowdpatch.crowd.planner` in memory,
:mod:`crowdpatch.crowd.store_planner` in the database) only count answers against
``votes_wanted``; they never decide anything a planner decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session

from crowdpatch.config import ProjectConfig
from crowdpatch.store.models import RegionRow, TaskRow


@dataclass
class AnswerOutcome:
    """What the answers so far decide about one question."""

    done: bool
    votes_wanted: int
    """Answers the question wants in all (counting those already in); unchanged when done."""
    created: list[TaskRow] = field(default_factory=list)


@dataclass(frozen=True)
class QuestionFacts:
    """What the answer path knows of a question without loading its ORM row."""

    id: int
    kind: str
    image_id: int
    votes_wanted: int
    project_id: int | None = None
    region_id: int | None = None
    key: str | None = None
    """The window's lattice key ("level:ix:iy") for a patch question."""


class QuestionPlanner(Protocol):
    name: str

    def uses_early_stop(self, config: ProjectConfig) -> bool:
        """Whether ``votes_target``'s "two agreeing answers are enough" applies to ``votes_wanted``."""
        ...

    def first_votes(self, config: ProjectConfig) -> int:
        """``votes_wanted`` of a new yes/no question."""
        ...

    def region_questions(self, session: Session, project_id: int, image_id: int, region: RegionRow, config: ProjectConfig) -> list[TaskRow]:
        ...

    def after_answer(
        self, session: Session, project_id: int, config: ProjectConfig, task: TaskRow, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        """``answers``: the (worker id, value) pairs that count, oldest first, the new one included."""
        ...

    def quick_outcome(
        self, session: Session, config: ProjectConfig, question: QuestionFacts, values: list[Any]
    ) -> AnswerOutcome | None:
        """:meth:`after_answer`'s outcome when the answer values decide it without loading the question's row.

        The server's answer path asks this first: a question that plainly wants more answers, or one
        closed with a decision that creates nothing, costs a statement or two instead of the ORM's
        load, flush and unit of work. None: call :meth:`after_answer`. What it writes, it writes in
        the caller's transaction, exactly as :meth:`after_answer` would.
        """
        ...


def planner_for(config: ProjectConfig) -> QuestionPlanner:
    """The project's planner (``[crowd] planner``)."""
    from crowdpatch.crowd.adaptive import AdaptivePlanner
    from crowdpatch.crowd.decisions import FixedScheme

    planners: dict[str, QuestionPlanner] = {"fixed": FixedScheme(), "adaptive": AdaptivePlanner()}
    try:
        return planners[config.crowd.planner]
    except KeyError:
        raise ValueError(f"unknown planner {config.crowd.planner!r}; choose from {', '.join(planners)}") from None

