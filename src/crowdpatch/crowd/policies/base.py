"""What a question policy is, and the registry that picks one by name (``[crowd] planner``).

A policy decides which questions to ask: the first questions of an accepted region, and what one
more answer to a question sets in motion (the question is done, maybe with new questions; or it wants
more answers). It decides inside the caller's transaction and only from the store, so the in-process
simulator and any number of server processes reach the same decisions. It never leases, stores an
answer or counts answers in flight: that is the dispatchers' work (:mod:`crowdpatch.crowd.dispatch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.closing import verified_regions
from crowdpatch.crowd.questions import QuestionFacts
from crowdpatch.registry import Registry
from crowdpatch.store.models import RegionRow


@dataclass(frozen=True)
class AnswerOutcome:
    """What the answers so far decide about one question."""

    done: bool
    votes_wanted: int
    """Answers the question wants in all (counting those already in); unchanged when done."""
    created: int = 0
    """Questions its closing created."""


class Policy(Protocol):
    name: str
    verifies_clusters: bool
    """Whether an image's saliency clusters are verified one by one (else it gets one "whole" region)."""

    def uses_early_stop(self, config: ProjectConfig) -> bool:
        """Whether ``votes_target``'s "two agreeing answers are enough" applies to ``votes_wanted``."""
        ...

    def first_votes(self, config: ProjectConfig) -> int:
        """``votes_wanted`` of a new verification."""
        ...

    def region_questions(
        self, session: Session, project_id: int, image_id: int, region: RegionRow, config: ProjectConfig
    ) -> list[str]:
        """Ask the first questions of an accepted region; their kinds, one per question asked."""
        ...

    def after_answer(
        self, session: Session, config: ProjectConfig, question: QuestionFacts, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        """``answers``: the (worker id, value) pairs that count, oldest first, the new one included.

        A question done is closed here (:func:`crowdpatch.crowd.closing.close`), with whatever follows it.
        """
        ...


POLICIES: Registry[type[Policy]] = Registry("planner")
"""Policy classes by the name ``[crowd] planner`` gives."""


def ask_verified_regions(
    session: Session, policy: Policy, config: ProjectConfig, project_id: int, image_id: int
) -> int:
    """Once every cluster of the image is verified: the first questions of its accepted regions; how many."""
    regions = verified_regions(session, image_id)
    if regions is None:
        return 0
    created = 0
    for region in regions:
        created += len(policy.region_questions(session, project_id, image_id, region, config))
    session.flush()
    return created
