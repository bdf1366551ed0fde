"""Extreme-point, pick and correction questions added row by row, the way the precise planner asks them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import select

from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.questions import add_correct_task, add_extreme_task, add_pick_task
from crowdpatch.datasets import load_folder_dataset
from crowdpatch.ingest import add_images
from crowdpatch.masks.candidates import CONTEXT, CROP_SALIENCY, GRABCUT, padded, points_box
from crowdpatch.project import Project
from crowdpatch.store.models import ImageRow, RegionRow, TaskRow

SCENE_CROP_TOP, SCENE_SCALE = 80, 0.5
"""How ``photo-0.png`` of the ``landscape_photos`` fixture is cut from the examples' scene: rows 80-480, halved."""


def unproposed_project(directory: Path, photos: Path, configure=None) -> Project:
    """A project looking for a horse in ``photos``, its images added and no question asked yet."""
    config = ProjectConfig(name="horses", target="horse", images_dir=str(photos))
    config.crowd.gold_rate = 0.0
    if configure is not None:
        configure(config)
    project = Project.create(directory, config)
    assert add_images(project, load_folder_dataset(photos).records).added > 0
    return project


def image_ids(project: Project) -> list[int]:
    with project.sessions() as session:
        return list(session.scalars(select(ImageRow.id).order_by(ImageRow.id)))


def image_size(project: Project, image_id: int) -> tuple[int, int]:
    with project.sessions() as session:
        image = session.get(ImageRow, image_id)
        return image.width, image.height


def ask_extreme(project: Project, image_id: int) -> int:
    """An extreme-points question over the whole image (a "whole" region, as the precise planner makes)."""
    width, height = image_size(project, image_id)
    with project.sessions.begin() as session:
        region = RegionRow(image_id=image_id, source="whole", box=[0, 0, width, height], verdict="accepted")
        session.add(region)
        session.flush()
        task = add_extreme_task(session, project.id, image_id, region, 1, "where is the target?")
        session.flush()
        return task.id


def ask_pick(project: Project, extreme_id: int, points: list[list[float]], candidates: list[str]) -> int:
    """A pick among ``candidates`` computed from ``points``, shown over their padded box (as the planner does)."""
    with project.sessions.begin() as session:
        extreme = session.get(TaskRow, extreme_id)
        image = session.get(ImageRow, extreme.image_id)
        view = padded(points_box(points, image.width, image.height), CONTEXT, image.width, image.height)
        task = add_pick_task(session, extreme, points, view, candidates, "which candidate fits?")
        session.flush()
        return task.id


def ask_correct(project: Project, pick_id: int, candidate: str, rounds: list[list[list[float]]] | None = None) -> int:
    """A correction of pick ``pick_id``'s ``candidate``, after ``rounds`` of earlier clicks (none: round 1)."""
    with project.sessions.begin() as session:
        task = add_correct_task(session, session.get(TaskRow, pick_id), candidate, rounds or [])
        session.flush()
        return task.id


def close_tasks(project: Project, *task_ids: int) -> None:
    """Mark questions decided, so that a worker is handed only what follows them."""
    with project.sessions.begin() as session:
        for task_id in task_ids:
            session.get(TaskRow, task_id).state = "done"


def ask_correction_only(
    project: Project, image_id: int, candidate: str, rounds: list[list[list[float]]] | None = None
) -> tuple[int, int]:
    """On ``image_id``: an extreme question and a pick (both decided), then a correction of ``candidate``, the only
    question open there. Returns (pick id, correction id)."""
    extreme = ask_extreme(project, image_id)
    pick = ask_pick(project, extreme, scene_extreme_points(), [CROP_SALIENCY, GRABCUT])
    close_tasks(project, extreme, pick)
    return pick, ask_correct(project, pick, candidate, rounds)


def scene_extreme_points() -> list[list[float]]:
    """The object's top, bottom, left and right ends in ``photo-0.png`` of ``landscape_photos`` (image pixels)."""
    from crowdpatch.server.examples import scene

    ys, xs = np.nonzero(scene().target)
    ends = [np.argmin(ys), np.argmax(ys), np.argmin(xs), np.argmax(xs)]
    return [[float(xs[i]) * SCENE_SCALE, float(ys[i] - SCENE_CROP_TOP) * SCENE_SCALE] for i in ends]
