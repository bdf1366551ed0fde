"""Polygon answers (the baseline study) -> one binary mask per image, beside the patch masks.

A worker in polygon mode draws the target's outline on the whole image; the answer is
``{"polygon": [[x, y], ...]}`` in image pixels. Its mask is the filled polygon, so the patch
method's masks can be compared with the masks people draw by hand, on the same images, by IoU
against the ground truth where it exists (and by measured seconds, in the summary).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.path import Path as MplPath
from sqlalchemy import select

from crowdpatch.datasets import load_mask
from crowdpatch.masks.export import mask_name, write_binary_png
from crowdpatch.masks.metrics import mask_iou
from crowdpatch.project import Project
from crowdpatch.store.models import AnswerRow, ImageRow, MaskRow, TaskRow, WorkerRow

POLYGON_DIR = Path("masks") / "polygon"


@dataclass
class PolygonMaskStats:
    image_id: int
    name: str
    polygons: int
    iou: float | None
    foreground: float


def fill_polygon(points: list[list[float]], width: int, height: int) -> np.ndarray:
    """The pixels whose centres lie inside the polygon, as a ``(height, width)`` bool array.

    Answers are in pixel-edge coordinates (0 .. width), as the worker page records clicks, so pixel
    (row i, column j) is inside when its centre (j + 0.5, i + 0.5) is: a rectangle drawn along
    pixel edges covers exactly its pixels and a polygon along the image's border covers the whole
    image. (Scan-line fillers such as ``cv2.fillPoly`` or PIL also colour every pixel the outline
    touches, a one-pixel dilation that matters on small images.)
    """
    mask = np.zeros((height, width), dtype=bool)
    if len(points) < 3:
        return mask
    xy = np.asarray(points, dtype=float)
    x0, y0 = np.clip(np.floor(xy.min(axis=0)).astype(int), 0, [width, height])
    x1, y1 = np.clip(np.ceil(xy.max(axis=0)).astype(int), 0, [width, height])
    if x1 <= x0 or y1 <= y0:
        return mask
    cols, rows = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
    inside = MplPath(xy).contains_points(np.column_stack([cols.ravel(), rows.ravel()]))
    mask[y0:y1, x0:x1] = inside.reshape(rows.shape)
    return mask


def combine_polygons(masks: list[np.ndarray]) -> np.ndarray:
    """Several people's polygons of one image: a pixel is object where at least half of them say so."""
    votes = np.sum(masks, axis=0)
    return votes * 2 >= len(masks)


def collect_polygons(project: Project, drop_banned: bool) -> dict[int, list[list[list[float]]]]:
    """image id -> every polygon drawn on it (answers of stopped workers left out when ``drop_banned``)."""
    with project.sessions() as session:
        query = (
            select(TaskRow.image_id, AnswerRow.value)
            .join(TaskRow, TaskRow.id == AnswerRow.task_id)
            .join(WorkerRow, WorkerRow.id == AnswerRow.worker_id)
            .where(TaskRow.project_id == project.id, TaskRow.kind == "polygon")
            .order_by(AnswerRow.id)
        )
        if drop_banned:
            query = query.where(WorkerRow.banned.is_(False))
        polygons: dict[int, list[Any]] = defaultdict(list)
        for image_id, value in session.execute(query):
            points = value.get("polygon") if isinstance(value, dict) else None
            if points:
                polygons[image_id].append(points)
    return dict(polygons)


def build_polygon_masks(project: Project) -> list[PolygonMaskStats]:
    """Rasterize every image's polygon answers to ``masks/polygon/<name>.png``; record each with its IoU vs GT."""
    polygons = collect_polygons(project, project.config.aggregation.drop_banned)
    if not polygons:
        return []
    with project.sessions() as session:
        images = session.execute(
            select(ImageRow.id, ImageRow.path, ImageRow.mask_path, ImageRow.width, ImageRow.height)
            .where(ImageRow.id.in_(polygons))
            .order_by(ImageRow.id)
        ).all()
    stats = []
    for row in images:
        drawn = polygons[row.id]
        binary = combine_polygons([fill_polygon(points, row.width, row.height) for points in drawn])
        name = mask_name(row.id, row.path)
        file = project.path(str(POLYGON_DIR)) / f"{name}.png"
        write_binary_png(file, binary)
        iou = None
        if row.mask_path:
            iou = mask_iou(binary, load_mask(Path(row.mask_path), (row.width, row.height)))
        stats.append(PolygonMaskStats(row.id, name, len(drawn), iou, float(binary.mean())))
        _record(project, row.id, file, iou, len(drawn))
    return stats


def _record(project: Project, image_id: int, file: Path, iou: float | None, polygons: int) -> None:
    with project.sessions.begin() as session:
        row = session.scalar(select(MaskRow).where(MaskRow.image_id == image_id, MaskRow.source == "polygon"))
        if row is None:
            row = MaskRow(image_id=image_id, source="polygon", file=str(file))
            session.add(row)
        row.file, row.parameters, row.iou = str(file), {"polygons": polygons, "combine": "half of the polygons"}, iou
