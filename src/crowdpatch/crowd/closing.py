"""Closing a question and what its decision sets in motion, by one path, in the caller's transaction.

Every question closes through :func:`close`: its image is locked, the question is marked done with
its decision, whatever follows is created (a "yes" window's children, the regions and first
questions of a verified image, a policy's follow-ups), and an image left with no open pipeline
question moves to "done". Everything here reads the store, not a dispatcher's memory, so the
in-process simulator and any number of server processes reach the same decisions from the same answers.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from crowdpatch.boxes import Box
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.kinds import OPEN_PIPELINE_SQL, OUTSIDE_PIPELINE, POLYGON, VERIFY, YES
from crowdpatch.crowd.questions import QuestionFacts, insert_window_tasks, region_windows
from crowdpatch.patches.lattice import WindowKey, can_subdivide, children
from crowdpatch.store.db import backend_of
from crowdpatch.store.models import ImageRow, RegionRow, TaskRow
from crowdpatch.store.sql import Statement

# The literal 'open' (not a parameter) lets SQLite use the partial index ix_task_open_per_image.
_OPEN_PIPELINE_QUESTION = Statement(
    f"SELECT id FROM task WHERE image_id = :image AND {OPEN_PIPELINE_SQL} LIMIT 1", columns={"id": None}
)
# A closed question wants no more answers: its leases go with it (nobody's answer to it is taken now).
_RELEASE = Statement("DELETE FROM lease WHERE task_id = :task")
_MARK_DONE = Statement("UPDATE task SET state = 'done', decision = :decided, leases_count = 0 WHERE id = :task")
# PostgreSQL: the image's lock, the release and the mark, then whether another pipeline question of the
# image is open, read under the lock, in one call (the function migration 0008 installs).
_CLOSE_POSTGRES = Statement(
    "SELECT crowdpatch_close(:task, :image, :decided, :outside) AS others_open", columns={"others_open": None}
)

# An image's verifications, open and decided, in one read.
_VERIFICATIONS = Statement(
    f"SELECT region_id, decision, state FROM task WHERE image_id = :image AND kind = '{VERIFY}'",
    columns={"region_id": None, "decision": None, "state": None},
)

# Each verified cluster's verdict from its verification's decision (a region has one verification at most).
_SET_VERDICTS = Statement(
    f"UPDATE region SET verdict = CASE WHEN (SELECT t.decision FROM task t WHERE t.region_id = region.id"
    f" AND t.kind = '{VERIFY}') = '{YES}' THEN 'accepted' ELSE 'rejected' END"
    f" WHERE id IN (SELECT region_id FROM task WHERE image_id = :image AND kind = '{VERIFY}')"
)
_ENTER_PATCH_STAGE = Statement(
    "UPDATE image SET stage = 'patch' WHERE id = :image RETURNING width, height",
    columns={"width": None, "height": None},
)


def close(
    session: Session, question: QuestionFacts, decision: str | None, follow: Callable[[], int] | None = None
) -> int:
    """Close ``question`` with ``decision`` (None for grids and polygons); ``follow`` creates what follows.

    Returns how many questions were created (``follow`` says how many). The image is finished here when
    nothing new is open: where closing told whether another of its questions is open, that still holds
    when ``follow`` created nothing (questions close only here, and each closing checks its image).
    """
    others_open = mark_done(session, question, decision)
    created = follow() if follow is not None else 0
    if question.kind != POLYGON and not created:  # the polygon baseline decides nothing in the patch pipeline
        finish_image_if_done(session, question.image_id, others_open)
    return created


def lock_image(session: Session, image_id: int) -> None:
    """Serialize decisions on one image across server processes (a row lock on PostgreSQL; SQLite has one writer).

    Two answers closing two questions of an image at once would otherwise both create their shared
    children, or each see the other still open and neither finish the image.
    """
    if backend_of(session) == "postgresql":
        session.get(ImageRow, image_id, with_for_update={"key_share": True})


def mark_done(session: Session, question: QuestionFacts, decision: str | None) -> bool | None:
    """The question done with its decision and its leases released, its image locked (:func:`lock_image`).

    Returns whether another pipeline question of the image is still open, where the backend tells
    it in the same round trip (PostgreSQL), else None. A row the session has loaded is kept in step
    without a flush (which cost more than closing it).
    """
    others_open = None
    if backend_of(session) == "postgresql":
        others_open = _CLOSE_POSTGRES.scalar(
            session, task=question.id, image=question.image_id, decided=decision, outside=list(OUTSIDE_PIPELINE)
        )
    else:
        _RELEASE.run(session, task=question.id)
        _MARK_DONE.run(session, task=question.id, decided=decision)
    _keep_loaded(session, TaskRow, question.id, state="done", decision=decision, leases_count=0)
    return others_open


def _keep_loaded(session: Session, entity: type, row_id: int, **values: object) -> None:
    """A row the session has loaded, kept in step with what a statement just wrote (a flush would cost more)."""
    loaded = session.identity_map.get(session.identity_key(entity, row_id)) if session.identity_map else None
    if loaded is not None:
        for name, value in values.items():
            set_committed_value(loaded, name, value)


def finish_image_if_done(session: Session, image_id: int, others_open: bool | None = None) -> None:
    """An image whose pipeline questions are all decided moves to stage "done" (``others_open``: known already)."""
    if others_open is None:
        session.flush()
        others_open = _OPEN_PIPELINE_QUESTION.one(session, image=image_id) is not None
    if not others_open:
        session.get(ImageRow, image_id).stage = "done"


def create_children(session: Session, window: QuestionFacts, config: ProjectConfig) -> int:
    """The children of a window voted "yes" (those not asked already), unless it is at the depth or size limit."""
    key = WindowKey.parse(window.key or "")
    patches = config.patches
    region_box, known = region_windows(session, window.region_id)
    if not can_subdivide(region_box, key, patches.max_depth, patches.min_side):
        return 0
    return insert_window_tasks(session, window, region_box, children(key), config, known)


def verified_regions(session: Session, image_id: int) -> list[RegionRow] | None:
    """Once every cluster of an image is verified: its accepted regions (the image moves to stage "patch").

    None while a verification is still open. Accepted clusters whose boxes overlap become one region;
    none accepted: the whole image is the region. The verdicts and the stage are written by statements,
    not the ORM's unit of work, which cost more than the rest of the answer that closes the image's
    last verification (docs/benchmarks.md, "A verified image's decisions").
    """
    verifications = _VERIFICATIONS.all(session, image=image_id)
    if any(verification.state == "open" for verification in verifications):
        return None
    _SET_VERDICTS.run(session, image=image_id)
    width, height = _ENTER_PATCH_STAGE.one(session, image=image_id)
    _keep_loaded(session, ImageRow, image_id, stage="patch")
    accepted_ids = [verification.region_id for verification in verifications if verification.decision == YES]
    if accepted_ids:
        accepted = list(
            session.scalars(
                select(RegionRow)
                .where(RegionRow.id.in_(accepted_ids))
                .order_by(RegionRow.id)
                .execution_options(populate_existing=True)  # their verdicts were just set
            )
        )
    else:
        whole = RegionRow(image_id=image_id, source="whole", box=[0, 0, width, height], verdict="accepted")
        session.add(whole)
        session.flush()
        accepted = [whole]
    return merge_overlapping(session, image_id, accepted)


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
                    union = Box(
                        min(box_a.x0, box_b.x0),
                        min(box_a.y0, box_b.y0),
                        max(box_a.x1, box_b.x1),
                        max(box_a.y1, box_b.y1),
                    )
                    groups[a] = (union, members_a + members_b)
                    del groups[b]
                    merged = True
                    break
            if merged:
                break
    return groups
