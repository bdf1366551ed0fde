"""What a finished question decides, written in the caller's transaction.

Everything here reads the store, not a planner's memory, so any number of server processes (or the
in-process simulator) reach the same decisions from the same answers.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from crowdpatch.boxes import Box
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.plain_sql import PerBackend
from crowdpatch.crowd.planners import AnswerOutcome, QuestionFacts, planner_for
from crowdpatch.crowd.tasks import add_region_questions, add_window_tasks, insert_window_tasks
from crowdpatch.patches.lattice import WindowKey, can_subdivide, children
from crowdpatch.store.models import ImageRow, RegionRow, TaskRow

YES, NO = "yes", "no"


def majority(values: list[str]) -> str:
    """Majority of yes/no answers; a tie is "yes" so the window is refined rather than lost."""
    yes = sum(1 for v in values if v == YES)
    return YES if yes * 2 >= len(values) else NO


def merge_boxes(boxes: list[Box]) -> list[tuple[Box, list[int]]]:
    """Union boxes of the groups of overlapping boxes (transitively), with the members' indices."""
    groups: list[tuple[Box, list[int]]] = [(box, [i]) for i, box in enumerate(boxes)]
    merged = True
    while merged:
        merged = False
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                (box_a, members_a), (box_b, members_b) = groups[a], groups[b]
                if box_a.x0 < box_b.x1 and box_b.x0 < box_a.x1 and box_a.y0 < box_b.y1 and box_b.y0 < box_a.y1:
                    union = Box(min(box_a.x0, box_b.x0), min(box_a.y0, box_b.y0), max(box_a.x1, box_b.x1), max(box_a.y1, box_b.y1))
                    groups[a] = (union, members_a + members_b)
                    del groups[b]
                    merged = True
                    break
            if merged:
                break
    return groups



def votes_target(values: list[Any], votes: int, early_stop: bool) -> int:
    """Answers a question needs given those it has: 2 while the first two agree (or are not in yet)."""
    if not early_stop or votes <= 2:
        return votes
    if len(values) >= 2 and values[0] != values[1]:
        return votes
    return 2


class FixedScheme:
    """The paper's scheme: every accepted region gets its whole lattice (or grid), fixed redundancy."""

    name = "fixed"

    def uses_early_stop(self, config: ProjectConfig) -> bool:
        return config.crowd.early_stop

    def first_votes(self, config: ProjectConfig) -> int:
        return config.crowd.votes

    def region_questions(self, session: Session, project_id: int, image_id: int, region: RegionRow, config: ProjectConfig) -> list[TaskRow]:
        return add_region_questions(session, project_id, image_id, region, config)

    def after_answer(
        self, session: Session, project_id: int, config: ProjectConfig, task: TaskRow, answers: list[tuple[int, Any]]
    ) -> AnswerOutcome:
        values = [value for _, value in answers]
        if len(values) < votes_target(values, task.votes_wanted, config.crowd.early_stop):
            return AnswerOutcome(False, task.votes_wanted)
        return AnswerOutcome(True, task.votes_wanted, close_question(session, project_id, config, task.id, values))

    def quick_outcome(
        self, session: Session, config: ProjectConfig, question: QuestionFacts, values: list[Any]
    ) -> AnswerOutcome | None:
        if len(values) < votes_target(values, question.votes_wanted, config.crowd.early_stop):
            return AnswerOutcome(False, question.votes_wanted)
        if question.kind != "patch" or None in (question.project_id, question.region_id, question.key):
            return None
        # Windows, the bulk of a study: closed by one UPDATE, and a "yes" window's children created by one
        # INSERT, without the ORM (its load, flush and unit of work cost more than the rest of the answer).
        decision = majority(values)
        lock_image(session, question.image_id)
        _PLAIN.on(session).run(session, "mark_done", task=question.id, decided=decision)
        created = 0
        if decision == YES:
            created = create_children(session, question, config)
        if not created:  # new questions are open ones: the image is not done
            finish_image_if_done(session, question.image_id)
        return AnswerOutcome(True, question.votes_wanted)


def create_children(session: Session, window: QuestionFacts, config: ProjectConfig) -> int:
    """The children of a window voted "yes" (those not asked already), unless it is at the depth or size limit."""
    key = WindowKey.parse(window.key)
    patches = config.patches
    box = _PLAIN.on(session).one(session, "region_box", region=window.region_id)[0]
    region_box = Box.from_list(json.loads(box) if isinstance(box, str) else box)  # JSON text on SQLite
    if not can_subdivide(region_box, key, patches.max_depth, patches.min_side):
        return 0
    return insert_window_tasks(
        session, window.project_id, window.image_id, window.region_id, region_box, children(key), config, (window.id, window.key)
    )


def lock_image(session: Session, image_id: int) -> None:
    """Serialize decisions on one image across server processes (a row lock on PostgreSQL; SQLite has one writer).

    Two answers closing two questions of an image at once would otherwise both create their shared
    children, or each see the other still open and neither finish the image.
    """
    if session.get_bind().dialect.name != "sqlite":  # SQLite has no row locks: its one writer is serialized already
        session.get(ImageRow, image_id, with_for_update=True)


_PLAIN = PerBackend({
    # The literal 'open' (not a parameter) lets SQLite use the partial index ix_task_open_per_image.
    "open_pipeline_question": (
        "SELECT id FROM task WHERE image_id = :image AND kind NOT IN ('gold', 'polygon') AND state = 'open' LIMIT 1"
    ),
    "mark_done": "UPDATE task SET state = 'done', decision = :decided WHERE id = :task",
    "region_box": "SELECT box FROM region WHERE id = :region",
})
"""Statements on the path of every closed question (see :mod:`plain_sql`)."""


def finish_image_if_done(session: Session, image_id: int) -> None:
    """An image whose pipeline questions are all decided moves to stage "done"."""
    session.flush()
    if _PLAIN.on(session).one(session, "open_pipeline_question", image=image_id) is None:
        session.get(ImageRow, image_id).stage = "done"


def close_question(
    session: Session, project_id: int, config: ProjectConfig, task_id: int, values: list[Any], decision: str | None = None
) -> list[TaskRow]:
    """Mark a question done and create what its decision calls for; returns the new questions.

    The decision of a yes/no question is the majority of ``values`` unless the caller decided it.
    """
    row = session.get(TaskRow, task_id)
    lock_image(session, row.image_id)
    mark_done(session, row, None if row.kind in ("grid", "polygon") else (decision or majority(values)))
    created: list[TaskRow] = []
    if row.kind == "polygon":
        # The baseline study's polygons decide nothing in the patch pipeline.
        return created
    if row.kind == "verify":
        still_open = session.scalar(
            select(func.count()).select_from(TaskRow).where(
                TaskRow.image_id == row.image_id, TaskRow.kind == "verify", TaskRow.state == "open"
            )
        )
        if not still_open:
            created = decide_regions(session, project_id, config, row.image_id)
    elif row.kind == "patch" and row.decision == YES:
        region = session.get(RegionRow, row.region_id)
        key = WindowKey.parse(row.key)
        patches = config.patches
        if can_subdivide(Box.from_list(region.box), key, patches.max_depth, patches.min_side):
            created = add_window_tasks(session, project_id, row.image_id, region, children(key), config, parent=row)
    if not created:  # new questions are open ones: the image is not done
        finish_image_if_done(session, row.image_id)
    return created


def mark_done(session: Session, row: TaskRow, decision: str | None) -> None:
    """Close a question by one UPDATE, its loaded row kept in step without a flush.

    Every closed question passes here, in the answer's transaction; an ORM flush of the one
    changed row cost more than the rest of closing it.
    """
    _PLAIN.on(session).run(session, "mark_done", task=row.id, decided=decision)
    set_committed_value(row, "state", "done")
    set_committed_value(row, "decision", decision)


def merge_overlapping(session: Session, image_id: int, regions: list[RegionRow]) -> list[RegionRow]:
    """Accepted clusters whose boxes overlap become one region over their union box.

    Saliency often splits one object into touching clusters; asking each one's lattice would ask
    the shared area twice and cut the object at the clusters' seams.
    """
    groups = merge_boxes([Box.from_list(r.box) for r in regions])
    if len(groups) == len(regions):
        return regions
    merged: list[RegionRow] = []
    for box, members in groups:
        if len(members) == 1:
            merged.append(regions[members[0]])
            continue
        for index in members:
            regions[index].verdict = "merged"
        union = RegionRow(image_id=image_id, source="merged", box=box.as_list(), verdict="accepted")
        session.add(union)
        merged.append(union)
    session.flush()
    return merged


def decide_regions(session: Session, project_id: int, config: ProjectConfig, image_id: int) -> list[TaskRow]:
    """All clusters of an image verified: accepted ones become regions; none accepted -> the whole image."""
    image = session.get(ImageRow, image_id)
    verdicts = {
        region_id: decision
        for region_id, decision in session.execute(
            select(TaskRow.region_id, TaskRow.decision).where(TaskRow.image_id == image_id, TaskRow.kind == "verify")
        )
    }
    accepted = []
    for region in image.regions:
        if region.id in verdicts:
            region.verdict = "accepted" if verdicts[region.id] == YES else "rejected"
            if region.verdict == "accepted":
                accepted.append(region)
    if not accepted:
        whole = RegionRow(image_id=image_id, source="whole", box=[0, 0, image.width, image.height], verdict="accepted")
        session.add(whole)
        session.flush()
        accepted = [whole]
    accepted = merge_overlapping(session, image_id, accepted)
    image.stage = "patch"
    created: list[TaskRow] = []
    planner = planner_for(config)
    for region in accepted:
        created += planner.region_questions(session, project_id, image_id, region, config)
    session.flush()
    return created
