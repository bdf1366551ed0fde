"""Creating questions in the store: verification of clusters, patch windows, grid screens.

Every question records in ``reason`` why it was asked, so a requester can follow the planner.
"""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from crowdpatch.boxes import Box
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.plain_sql import PerBackend
from crowdpatch.crowd.planners import planner_for
from crowdpatch.patches.lattice import WindowKey, first_level, window_box
from crowdpatch.store.models import ImageRow, RegionRow, TaskRow

VERIFY_KEY = "verify"
GRID_KEY = "grid"


SHOWN_AS = {"gold": "patch", "cell": "patch", "outline": "verify"}
"""Question kinds a worker sees as another kind: gold and single grid cells are patches, an outline
check is a yes/no about an outlined area. The API's task kinds stay verify | patch | grid | polygon."""


def shown_kind(kind: str) -> str:
    return SHOWN_AS.get(kind, kind)


def task_variant(kind: str) -> str | None:
    """What a client must know beyond the shown kind: an outline check is judged differently from a verification."""
    return "outline" if kind == "outline" else None


def question_text(kind: str, target: str) -> str:
    """What a worker reads for a question of this (stored) kind."""
    if kind == "verify":
        return f"Is the {target} inside the highlighted area?"
    if kind == "outline":
        return f"Does the yellow outline cover the {target} well (little of it left out, little else inside)?"
    if kind == "grid":
        return f"Click every cell that shows part of the {target}."
    if kind == "polygon":
        return f"Draw a polygon around the {target}: click its outline point by point, then close it."
    return f"Is part of the {target} in this patch?"


def add_verify_task(session: Session, project_id: int, image: ImageRow, region: RegionRow, config: ProjectConfig) -> TaskRow:
    task = TaskRow(
        project_id=project_id,
        image_id=image.id,
        region_id=region.id,
        kind="verify",
        key=VERIFY_KEY,
        level=0,
        box=list(region.box),
        votes_wanted=planner_for(config).first_votes(config),
        reason=f"saliency cluster (mass {region.mass:.1f}): is the {config.target} inside it?",
    )
    session.add(task)
    return task


_PLAIN = PerBackend({"window_keys": "SELECT key FROM task WHERE region_id = :region AND kind = 'patch'"})
_INSERT_TASKS = insert(TaskRow.__table__)
"""Statements of the answer path that creates windows, built once (building them cost more than running them)."""


def existing_keys(session: Session, region_id: int) -> set[str]:
    return {key for key, in _PLAIN.on(session).run(session, "window_keys", region=region_id).fetchall()}


def window_task_values(
    project_id: int,
    image_id: int,
    region_id: int,
    region_box: Box,
    keys: list[WindowKey],
    config: ProjectConfig,
    parent: tuple[int, str] | None,
    known: set[str],
) -> list[dict]:
    """The columns of the patch questions for ``keys`` not in ``known`` (which gains them); ``parent``: (id, key)."""
    rows = []
    for key in keys:
        name = str(key)
        if name in known:
            continue
        known.add(name)
        reason = (
            f"level {key.level}: child of window {parent[1]} voted yes"
            if parent is not None
            else "level 1: the lattice over the verified region"
        )
        rows.append(dict(
            project_id=project_id,
            image_id=image_id,
            region_id=region_id,
            kind="patch",
            key=name,
            level=key.level,
            box=window_box(region_box, key).as_list(),
            parent_id=parent[0] if parent is not None else None,
            votes_wanted=config.crowd.votes,
            reason=reason,
        ))
    return rows


def add_window_tasks(
    session: Session,
    project_id: int,
    image_id: int,
    region: RegionRow,
    keys: list[WindowKey],
    config: ProjectConfig,
    parent: TaskRow | None,
    known_keys: set[str] | None = None,
) -> list[TaskRow]:
    """Patch questions for ``keys``; a window already asked in this region (shared by a neighbouring parent) is skipped."""
    known = existing_keys(session, region.id) if known_keys is None else known_keys
    values = window_task_values(
        project_id, image_id, region.id, Box.from_list(region.box), keys, config,
        (parent.id, parent.key) if parent is not None else None, known,
    )
    created = [TaskRow(**row) for row in values]
    session.add_all(created)
    return created


def insert_window_tasks(
    session: Session,
    project_id: int,
    image_id: int,
    region_id: int,
    region_box: Box,
    keys: list[WindowKey],
    config: ProjectConfig,
    parent: tuple[int, str],
) -> int:
    """:func:`add_window_tasks` by one INSERT, without ORM rows: how many questions it created.

    The answer path of the server creates a "yes" window's children this way; the ORM's unit of
    work for them was its most expensive step.
    """
    values = window_task_values(project_id, image_id, region_id, region_box, keys, config, parent, existing_keys(session, region_id))
    if values:
        session.connection().execute(_INSERT_TASKS, values)
    return len(values)


def add_grid_task(
    session: Session,
    project_id: int,
    image_id: int,
    region: RegionRow,
    config: ProjectConfig,
    size: int | None = None,
    votes_wanted: int | None = None,
) -> TaskRow:
    """One grid screen over the region; small regions get as many cells as they have pixels per side."""
    box = Box.from_list(region.box)
    size = min(size or config.patches.grid_size, box.width, box.height)
    task = TaskRow(
        project_id=project_id,
        image_id=image_id,
        region_id=region.id,
        kind="grid",
        key=GRID_KEY,
        level=1,
        box=box.as_list(),
        grid_size=size,
        votes_wanted=votes_wanted or config.crowd.votes,
        reason=f"grid {size} x {size} over the verified region",
    )
    session.add(task)
    return task


def add_region_questions(session: Session, project_id: int, image_id: int, region: RegionRow, config: ProjectConfig) -> list[TaskRow]:
    """The first step-2 questions of an accepted region, in the project's presentation."""
    if config.patches.presentation == "grid":
        return [add_grid_task(session, project_id, image_id, region, config)]
    return add_window_tasks(session, project_id, image_id, region, first_level(), config, parent=None, known_keys=set())


def add_polygon_tasks_for_images(session: Session, project_id: int, config: ProjectConfig) -> list[TaskRow]:
    """The baseline study: one polygon question per image that has none yet (workers in polygon mode answer them)."""
    have = set(session.scalars(select(TaskRow.image_id).where(TaskRow.project_id == project_id, TaskRow.kind == "polygon")))
    created = []
    images = session.execute(
        select(ImageRow.id, ImageRow.width, ImageRow.height)
        .where(ImageRow.project_id == project_id, ImageRow.stage != "error")
        .order_by(ImageRow.id)
    )
    for image_id, width, height in images:
        if image_id in have:
            continue
        task = TaskRow(
            project_id=project_id,
            image_id=image_id,
            kind="polygon",
            key="polygon",
            level=0,
            box=[0, 0, width, height],
            votes_wanted=config.server.polygon_votes,
            reason=f"baseline study: a polygon around the {config.target}",
        )
        session.add(task)
        created.append(task)
    session.flush()
    return created
