"""Every kind of question a project asks, and what each kind is, in one place.

A question's kind is stored on its row (``task.kind``). Whatever depends on it reads it here: how a
worker is shown the question (the API knows seven kinds), how it is answered (yes/no, grid cells, a
polygon, four extreme points, a pick among outlines, clicks on an outline's errors), what it asks,
where it comes in the hand-out order, and whether it is part of the mask pipeline. This module
imports nothing of the package, so the store's schema can read it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Form = Literal["yes_no", "grid", "polygon", "points", "choice", "clicks"]

YES, NO = "yes", "no"
"""The two answers of a yes/no question."""

VERIFY, OUTLINE, PATCH, GRID, CELL, GOLD, POLYGON = "verify", "outline", "patch", "grid", "cell", "gold", "polygon"
EXTREME, PICK, CORRECT = "extreme", "pick", "correct"

NOT_HERE = "not_here"
"""The key of an extreme-points answer that says the image shows no target: ``{"not_here": true}``."""


@dataclass(frozen=True)
class Kind:
    name: str
    form: Form
    """How it is answered: "yes" / "no", the grid cells clicked, a polygon, ``{"points": [[x, y] x 4]}``
    (or ``{"not_here": true}``), ``{"choice": k}`` (``null``: none of the outlines is on the target), or
    ``{"clicks": [[x, y], ...]}`` on an outline's errors (none: it fits)."""
    question: str
    """What a worker reads; ``{target}`` is the project's target ("horse")."""
    shown_as: str | None = None
    """The kind the API shows (verify | patch | grid | polygon), where it is not this one."""
    variant: str | None = None
    """What a client must know beyond the shown kind: an outline check is judged differently from a verification."""
    priority: int = 1
    """Hand-out order between kinds, lowest first (then level, then id)."""
    pipeline: bool = True
    """Part of the mask pipeline: an image is done once none of these is open. Gold and the polygon baseline are not."""

    @property
    def shown(self) -> str:
        return self.shown_as or self.name


_PATCH_QUESTION = "Is part of the {target} in this patch?"
GOLD_PRIORITY = 9
"""Gold questions' place in the open questions' order: after every kind a worker is handed."""

KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        # Outline checks first (their first answers tell the adaptive policy whether outlines are worth asking at
        # all), then verifications (their verdicts create the patch questions), then everything else.
        Kind(
            OUTLINE,
            "yes_no",
            "Does the yellow outline cover the {target} well (little of it left out, little else inside)?",
            shown_as=VERIFY,
            variant="outline",
            priority=-1,
        ),
        Kind(VERIFY, "yes_no", "Is the {target} inside the highlighted area?", priority=0),
        Kind(
            EXTREME,
            "points",
            "Click the four ends of the {target} in this order: top, bottom, left, right."
            " No {target}? Answer 'not here'.",
            priority=0,
        ),
        # A pick or a correction finishes an image: before new images' extreme points.
        Kind(
            PICK,
            "choice",
            "Which outline is closest to the {target}? If none is on the {target}, answer 'none'.",
            priority=-1,
        ),
        Kind(
            CORRECT,
            "clicks",
            "Click where the outline is wrong: on a part of the {target} left outside it, or on something inside it"
            " that is not the {target}. If it fits, answer 'fits'.",
            priority=-1,
        ),
        Kind(PATCH, "yes_no", _PATCH_QUESTION),
        Kind(GRID, "grid", "Click every cell that shows part of the {target}."),
        Kind(CELL, "yes_no", _PATCH_QUESTION, shown_as=PATCH),
        # Gold is drawn apart (ix_task_gold) and stays open all study long: last in the open questions'
        # order, so a hand-out never walks past every finished image's gold questions to reach work.
        Kind(GOLD, "yes_no", _PATCH_QUESTION, shown_as=PATCH, pipeline=False, priority=GOLD_PRIORITY),
        Kind(
            POLYGON,
            "polygon",
            "Draw a polygon around the {target}: click its outline point by point, then close it.",
            pipeline=False,
        ),
    )
}

PIPELINE_KINDS = tuple(name for name, kind in KINDS.items() if kind.pipeline)
"""What a worker in patch mode is handed (gold aside, which is mixed in at random)."""
OUTSIDE_PIPELINE = tuple(name for name, kind in KINDS.items() if not kind.pipeline)
"""Kinds asked beside the mask pipeline (gold checks, the polygon baseline): their open questions leave it done."""
YES_NO_KINDS = tuple(name for name, kind in KINDS.items() if kind.pipeline and kind.form == "yes_no")
"""Pipeline questions answered yes/no (gold is judged by its known answer instead)."""
GRID_KINDS = tuple(name for name, kind in KINDS.items() if kind.form == "grid")


def kind_of(name: str) -> Kind:
    return KINDS[name]


def shown_kind(kind: str) -> str:
    return KINDS[kind].shown


def task_variant(kind: str) -> str | None:
    return KINDS[kind].variant


def question_text(kind: str, target: str) -> str:
    """What a worker reads for a question of this (stored) kind."""
    return KINDS[kind].question.format(target=target)


def task_priority(kind: str) -> int:
    """Hand-out order of a kind (stored on the row, where the hand-out index reads it)."""
    kind_ = KINDS.get(kind)
    return kind_.priority if kind_ is not None else 1


def sql_list(kinds: tuple[str, ...]) -> str:
    """Kinds as an SQL list literal, ``('verify', 'patch')``: a literal lets the database use its partial indexes."""
    return "(" + ", ".join(f"'{kind}'" for kind in kinds) + ")"


OPEN_PIPELINE_SQL = f"state = 'open' AND kind NOT IN {sql_list(OUTSIDE_PIPELINE)}"
"""An open pipeline question, in SQL: the index ``ix_task_open_pipeline`` is partial on exactly these terms."""
