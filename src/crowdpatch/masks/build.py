"""Aggregated votes -> one soft and one binary attention mask per image, exported to disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Iterable

import numpy as np
import pandas as pd
from sqlalchemy import select

from crowdpatch.aggregate import collect_votes, posteriors
from crowdpatch.boxes import Box
from crowdpatch.crowd.kinds import CORRECT, EXTREME, GRID, OUTLINE, PATCH, PICK
from crowdpatch.crowd.policies.posteriors import grid_posteriors
from crowdpatch.crowd.questions import grid_resolution
from crowdpatch.datasets import ImageLoadError, InputProblem, load_mask, load_rgb
from crowdpatch.masks.candidate_store import CandidateStore
from crowdpatch.masks.candidates import CANDIDATE_NAMES
from crowdpatch.masks.export import (
    CocoImage,
    mask_names,
    write_binary_png,
    write_coco_json,
    write_mask_index,
    write_npy,
    write_soft_png,
)
from crowdpatch.masks.metrics import has_object, mask_iou
from crowdpatch.masks.polygons import build_polygon_masks
from crowdpatch.masks.refine import grabcut_refine, refined_soft
from crowdpatch.patches.lattice import WindowKey, grid_cells
from crowdpatch.patches.rasterize import binarize, rasterize_cells, rasterize_windows
from crowdpatch.project import Project
from crowdpatch.saliency.clusters import resolve_threshold
from crowdpatch.saliency.outline import outline_mask, salient_pixels
from crowdpatch.saliency.stored import load_saliency
from crowdpatch.store.models import ImageRow, MaskRow, RegionRow, TaskRow

EXPORT_FORMATS = ("png", "npy", "coco")

UNREFINED_OUTLINE = 0.5
"""Soft value of a verified region's saliency outline that no one refined (the adaptive budget ran out):
at the default threshold it is in the binary mask, but below anything the crowd confirmed."""


@dataclass(frozen=True)
class WindowPosterior:
    box: Box
    level: int
    posterior: float


@dataclass
class ImageMask:
    image_id: int
    name: str
    soft: np.ndarray
    regions: list[Box]
    windows: list[WindowPosterior] = field(default_factory=list)
    picked: bool = False
    """The mask is a candidate a worker picked (already drawn along the image's edges: not refined again)."""
    points: list[list[float]] = field(default_factory=list)
    """The extreme points it was drawn from (precise planner)."""
    clicks: list[list[float]] = field(default_factory=list)
    """The clicks of its correction rounds."""


def _last_correction(tasks: list[TaskRow]) -> TaskRow | None:
    """The image's last correction round answered, or None."""
    corrections = [task for task in tasks if task.kind == CORRECT and task.state == "done"]
    return max(corrections, key=lambda task: len(task.spec["rounds"])) if corrections else None


def _rounds(correction: TaskRow) -> list[list[list[float]]]:
    """Every round's clicks up to and including this correction's own answer."""
    return [*correction.spec["rounds"], *([correction.spec["answered"]] if "answered" in correction.spec else [])]


def _asked_points(tasks: list[TaskRow]) -> tuple[list[list[float]], list[list[float]]]:
    """The extreme points the image's mask was drawn from, and every correction round's clicks (for the report)."""
    last = _last_correction(tasks)
    if last is not None:
        return last.spec["points"], [click for clicks in _rounds(last) for click in clicks]
    picks = [task for task in tasks if task.kind == PICK and task.state == "done"]
    return (picks[-1].spec["points"], []) if picks else ([], [])


@dataclass
class MaskStats:
    image_id: int
    name: str
    iou: float | None
    """IoU with the ground truth; None without one, or when the ground truth holds no object."""
    saliency_iou: float | None
    foreground: float
    truth_empty: bool = False
    """The image has a ground-truth mask with no object in it: scored apart, never as IoU 1.0."""


def saliency_binary(saliency: np.ndarray) -> np.ndarray:
    """The saliency-only mask: the map above twice its mean (the adaptive threshold of the SOD literature)."""
    return saliency >= resolve_threshold(saliency, "adaptive")


class MaskBuilder:
    """Rasterizes the project's aggregated votes; aggregation runs once, on construction."""

    def __init__(self, project: Project):
        self.project = project
        with project.sessions() as session:
            votes = collect_votes(session, project.id, project.config.aggregation.drop_banned)
        self.votes = votes
        self.posteriors: pd.Series = posteriors(votes, project.config.aggregation.method)
        self._posterior_of: dict[str, float] = self.posteriors.to_dict()
        """P(yes) by question key, read once per window: a dict lookup, not a pandas one (7 us each, 20 s a study)."""
        self.adaptive = project.config.crowd.planner in ("adaptive", "precise")
        self.candidates = CandidateStore(project.directory, project.config)
        with project.sessions() as session:
            paths = dict(
                session.execute(select(ImageRow.id, ImageRow.path).where(ImageRow.project_id == project.id)).all()
            )
        self.names = mask_names(paths, project.config.images_dir)
        """Each image's output file name: its input's stem, told apart when stems repeat."""

    def image_mask(self, image_id: int) -> ImageMask:
        patches = self.project.config.patches
        with self.project.sessions() as session:
            image = session.get(ImageRow, image_id)
            shape = (image.height, image.width)
            regions = session.scalars(
                select(RegionRow)
                .where(RegionRow.image_id == image_id, RegionRow.verdict == "accepted")
                .order_by(RegionRow.id)
            ).all()
            soft = np.zeros(shape, dtype=np.float32)
            windows: list[WindowPosterior] = []
            boxes = []
            picked = False
            all_tasks: list[TaskRow] = []
            for region in regions:
                box = Box.from_list(region.box)
                boxes.append(box)
                tasks = session.scalars(
                    select(TaskRow).where(
                        TaskRow.region_id == region.id, TaskRow.kind.in_((PATCH, GRID, OUTLINE, PICK, CORRECT, EXTREME))
                    )
                ).all()
                all_tasks += tasks
                window_p: dict[WindowKey, float] = {}
                answered = False
                # Extreme points were asked: the mask is a pick's, a fallback region's, or none (no target).
                localized = any(task.kind == EXTREME for task in tasks)
                picked_mask = self._picked(image.path, tasks)
                if picked_mask is not None:
                    np.maximum(soft, picked_mask.astype(np.float32), out=soft)
                    answered = picked = True
                for task in tasks:
                    if task.kind == OUTLINE:
                        if task.decision == "yes" and picked_mask is None:
                            # The crowd accepted the saliency outline as this region's mask.
                            np.maximum(soft, outline_mask(self._salient(image), box).astype(np.float32), out=soft)
                            answered = True
                    elif task.kind == GRID:
                        if task.parent_id is not None:
                            continue  # an adaptive boundary round: its votes are items of its root grid
                        cells = grid_cells(box, grid_resolution(task))
                        if self.adaptive:
                            values = self._family_posteriors(session, task)
                        else:
                            probs = [self._p(f"{task.id}:{i}") for i in range(len(cells))]
                            if all(p is None for p in probs):
                                continue
                            values = [p or 0.0 for p in probs]
                        np.maximum(soft, rasterize_cells(cells, values, shape), out=soft)
                        answered = True
                        windows += [WindowPosterior(cell, 1, p) for cell, p in zip(cells, values)]
                    else:
                        p = self._p(str(task.id))
                        if p is not None:
                            window_p[WindowKey.parse(task.key)] = p
                            windows.append(WindowPosterior(Box.from_list(task.box), task.level, p))
                if window_p:
                    np.maximum(soft, rasterize_windows(box, window_p, shape, patches.combine), out=soft)
                elif not answered and self.adaptive and image.saliency_path and not localized:
                    # Verified but never refined (the budget ran out): the saliency outline is the best guess.
                    prior = outline_mask(self._salient(image), box).astype(np.float32) * UNREFINED_OUTLINE
                    np.maximum(soft, prior, out=soft)
            points, clicks = _asked_points(all_tasks)
            return ImageMask(image_id, self.names[image_id], soft, boxes, windows, picked, points, clicks)

    def _picked(self, image_path: str, tasks: list[TaskRow]) -> np.ndarray | None:
        """The candidate the crowd picked, after its last correction round; None if no candidate was picked."""
        last = _last_correction(tasks)
        if last is not None:
            return self.candidates.corrected(image_path, last.spec, _rounds(last))
        for task in tasks:
            if task.kind == PICK and task.decision in CANDIDATE_NAMES:
                chosen = task.spec["candidates"].index(task.decision)
                return self.candidates.masks(task.id, image_path, task.spec)[chosen]
        return None

    def _salient(self, image: ImageRow) -> np.ndarray:
        return salient_pixels(image.saliency_path, self.project.config.saliency.threshold)

    def _family_posteriors(self, session, root: TaskRow) -> list[float]:
        """An adaptive grid family's cells, by the planner's own model: answers weighted by each worker's accuracy
        (gold and peer agreement), the saliency map and the neighbours.

        crowd-kit's Dawid-Skene is not used here: a coarse first look is one vote copied onto four
        fine cells, and rounds vote only on a few cells, which skews its per-worker confusion
        matrices (GrabCut, spectral: mask IoU 0.38 with Dawid-Skene, 0.45 with this model on the same
        answers; docs/benchmarks.md).
        """
        return grid_posteriors(session, self.project.config, root).tolist()

    def refined(self, mask: ImageMask, image_path: str) -> np.ndarray:
        """The soft mask snapped to the image's edges (``[patches] refine``) within one cell of the crowd's boundary."""
        if self.project.config.patches.refine != "grabcut" or not mask.regions or mask.picked:
            return mask.soft
        threshold = self.project.config.patches.mask_threshold
        sides = [min(w.box.width, w.box.height) for w in mask.windows]
        band = min(sides) if sides else max(2, min(mask.soft.shape) // 32)
        binary = binarize(mask.soft, threshold)
        return refined_soft(mask.soft, grabcut_refine(load_rgb(Path(image_path)), binary, band), threshold)

    def _p(self, key: str) -> float | None:
        value = self._posterior_of.get(key)
        return None if value is None else float(value)


def build_masks(
    project: Project,
    formats: Iterable[str] = ("png",),
    progress: Callable[[int], None] | None = None,
    problems: list[InputProblem] | None = None,
    builder: MaskBuilder | None = None,
    image_ids: Collection[int] | None = None,
) -> list[MaskStats]:
    """Aggregate, rasterize and export every image's mask; record each in the store with its IoU vs GT.

    ``builder``: an aggregation already made (:class:`MaskBuilder`), instead of a new one; ``image_ids``:
    only these images' masks (the scale benchmark times the per-image part on a sample of a large study).

    The ground-truth mask and the saliency map are only read to score the mask, so when
    ``problems`` is given an unreadable one (edited or damaged since ``init``) is reported there
    and the mask is still written, without that score; without ``problems`` it raises
    :class:`ImageLoadError`, as before.
    """
    formats = set(formats)
    unknown = formats - set(EXPORT_FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; choose from {', '.join(EXPORT_FORMATS)}")
    builder = builder or MaskBuilder(project)
    threshold = project.config.patches.mask_threshold
    out = project.path("masks")
    with project.sessions() as session:
        images = session.execute(
            select(
                ImageRow.id, ImageRow.path, ImageRow.mask_path, ImageRow.saliency_path, ImageRow.width, ImageRow.height
            )
            .where(ImageRow.project_id == project.id, ImageRow.stage.notin_(("new", "error")))
            .order_by(ImageRow.id)
        ).all()
    if image_ids is not None:
        wanted = set(image_ids)
        images = [row for row in images if row.id in wanted]
    stats: list[MaskStats] = []
    coco: list[CocoImage] = []
    for row in images:
        mask = builder.image_mask(row.id)
        try:
            mask.soft = builder.refined(mask, row.path)
        except ImageLoadError as exc:
            # The image is only needed to snap the mask to its edges: keep the crowd's mask, say why.
            if problems is None:
                raise
            problems.append(InputProblem(str(exc.path), f"{exc.reason}; mask not refined"))
        binary = binarize(mask.soft, threshold)
        name = mask.name
        soft_file = out / "soft" / f"{name}.png"
        write_soft_png(soft_file, mask.soft)
        if "png" in formats:
            write_binary_png(out / "binary" / f"{name}.png", binary)
        if "npy" in formats:
            write_npy(out / "npy" / f"{name}.npy", mask.soft)
        if "coco" in formats:
            coco.append(CocoImage(row.id, Path(row.path).name, row.width, row.height, binary, float(mask.soft.max())))
        iou = saliency_iou = None
        truth_empty = False
        try:
            if row.mask_path:
                gt = load_mask(Path(row.mask_path), (row.width, row.height))
                truth_empty = not has_object(gt)
                if not truth_empty:
                    iou = mask_iou(binary, gt)
                    if row.saliency_path:
                        saliency_iou = mask_iou(saliency_binary(load_saliency(row.saliency_path)), gt)
        except ImageLoadError as exc:
            if problems is None:
                raise
            problems.append(InputProblem(str(exc.path), exc.reason))
        stats.append(MaskStats(row.id, name, iou, saliency_iou, float(binary.mean()), truth_empty))
        _record(project, row.id, soft_file, iou, threshold)
        if progress:
            progress(1)
    if "coco" in formats:
        write_coco_json(out / "coco.json", coco)
    # Polygons drawn in the baseline study become masks beside these (masks/polygon/), for the comparison.
    build_polygon_masks(project, builder.names)
    write_mask_index(out / "index.csv", _index_rows(out, {row.id: row.path for row in images}, builder.names))
    return stats


MASK_FILES = {"soft": "soft/{}.png", "binary": "binary/{}.png", "npy": "npy/{}.npy", "polygon": "polygon/{}.png"}
"""The files a mask may have under ``masks/``, as ``masks/index.csv`` columns."""


def _index_rows(out: Path, paths: dict[int, str], names: dict[int, str]) -> list[dict[str, str]]:
    rows = []
    for image_id, path in paths.items():
        row = {"image": path, "name": names[image_id]}
        for column, pattern in MASK_FILES.items():
            file = pattern.format(names[image_id])
            row[column] = file if (out / file).exists() else ""
        rows.append(row)
    return rows


def _record(project: Project, image_id: int, file: Path, iou: float | None, threshold: float) -> None:
    config = project.config
    parameters = {
        "aggregation": config.aggregation.method,
        "presentation": config.patches.presentation,
        "max_depth": config.patches.max_depth,
        "combine": config.patches.combine,
        "refine": config.patches.refine,
        "threshold": threshold,
    }
    with project.sessions.begin() as session:
        row = session.scalar(select(MaskRow).where(MaskRow.image_id == image_id, MaskRow.source == "patch"))
        if row is None:
            row = MaskRow(image_id=image_id, source="patch", file=str(file))
            session.add(row)
        row.file, row.parameters, row.iou = str(file), parameters, iou
