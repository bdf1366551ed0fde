"""Object masks proposed from a worker's four extreme points, for the crowd to pick from.

Extreme points (the object's top, bottom, left and right ends; Papadopoulos et al. 2017) localize
an object at its own scale and touch its boundary four times. Cheap segmenters turn them into a
mask, and none wins everywhere, so each is shown and a worker picks the best one:

- **GrabCut** (Rother et al. 2004) inside the points' box, with the points as sure object: it
  follows colour edges and needs no model.
- **GrabCut along edges** (Papadopoulos et al. 2017): the cheapest paths along image edges from
  each point to the next give a first outline; inside it is probable object, its skeleton sure
  object. It finds objects that fill little of their box (most COCO objects), where the box start
  takes the background for object; on horses' legs the skeleton can cross background, so the box
  start stays beside it (docs/benchmarks.md, "Masks from extreme points").
- **Saliency on the crop**: the project's saliency backend run again on the padded box alone. A
  small object that is not the most salient thing in the photo often is within its own crop, and
  a learned backend (CSNet) draws the boundaries GrabCut misses on camouflaged parts.

Each runs at most at :data:`MAX_SIDE` pixels and is deterministic (OpenCV's RNG is seeded), so the
server, the simulator and the mask builder all compute the same candidates from the same answer.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from crowdpatch.boxes import Box

MAX_SIDE = 400
"""GrabCut runs at most at this longest side of the crop (its cost grows with pixels); the mask is scaled back."""

ITERATIONS = 5
CONTEXT = 0.15
"""The crop around the points' box, as a share of the box's sides: GrabCut learns the background colours there."""

SEED_RADIUS = 0.02
"""Radius of the sure-object disc around each extreme point, as a share of the box's longer side."""

GRABCUT, EDGES, CROP_SALIENCY, SALIENCY_OUTLINE = "grabcut", "edges", "crop_saliency", "outline"
CANDIDATE_NAMES = (GRABCUT, EDGES, CROP_SALIENCY)
"""What a pick shows; an accepted saliency outline is corrected too, as the candidate ``outline``."""

Points = Sequence[Sequence[float]]


def extreme_points_of(mask: np.ndarray) -> list[list[float]] | None:
    """A mask's top, bottom, left and right ends (the middle pixel where several tie), in that order; None if empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    points = []
    for coords, end in ((ys, ys.min()), (ys, ys.max()), (xs, xs.min()), (xs, xs.max())):
        tied = np.flatnonzero(coords == end)
        i = tied[len(tied) // 2]
        points.append([float(xs[i]), float(ys[i])])
    return points


def points_box(points: Points, width: int, height: int) -> Box:
    """The box the extreme points span (at least 2 px a side), clipped to the image."""
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    x0, x1 = int(np.floor(min(xs))), int(np.ceil(max(xs))) + 1
    y0, y1 = int(np.floor(min(ys))), int(np.ceil(max(ys))) + 1
    x0, y0 = max(0, min(x0, width - 2)), max(0, min(y0, height - 2))
    return Box(x0, y0, min(width, max(x1, x0 + 2)), min(height, max(y1, y0 + 2)))


def padded(box: Box, share: float, width: int, height: int) -> Box:
    """``box`` grown by ``share`` of its sides on every side, clipped to the image."""
    dx, dy = round(box.width * share), round(box.height * share)
    return Box(max(0, box.x0 - dx), max(0, box.y0 - dy), min(width, box.x1 + dx), min(height, box.y1 + dy))


class _Crop:
    """The padded box around the points, scaled down to at most :data:`MAX_SIDE`: where GrabCut runs."""

    def __init__(self, rgb: np.ndarray, points: Points):
        height, width = rgb.shape[:2]
        self.shape = (height, width)
        self.box = points_box(points, width, height)
        self.crop = padded(self.box, CONTEXT, width, height)
        self.scale = min(1.0, MAX_SIDE / max(self.crop.width, self.crop.height))
        self.size = (max(2, round(self.crop.width * self.scale)), max(2, round(self.crop.height * self.scale)))
        crop = self.crop
        self.patch = cv2.resize(
            np.ascontiguousarray(rgb[crop.y0 : crop.y1, crop.x0 : crop.x1]), self.size, interpolation=cv2.INTER_AREA
        )

    def local(self, x: float, y: float) -> tuple[int, int]:
        """Image coordinates -> pixel of the scaled crop (clipped to it)."""
        return (
            int(np.clip(round((x - self.crop.x0) * self.scale), 0, self.size[0] - 1)),
            int(np.clip(round((y - self.crop.y0) * self.scale), 0, self.size[1] - 1)),
        )

    def box_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """GrabCut labels with everything outside the points' box background; and the box's own pixels."""
        labels = np.full((self.size[1], self.size[0]), cv2.GC_BGD, np.uint8)
        (x0, y0), (x1, y1) = self.local(self.box.x0, self.box.y0), self.local(self.box.x1 - 1, self.box.y1 - 1)
        inside = np.zeros(labels.shape, bool)
        inside[y0 : y1 + 1, x0 : x1 + 1] = True
        return labels, inside

    def radius(self, share: float) -> int:
        """``share`` of the box's longer side, in pixels of the scaled crop (at least 1)."""
        return max(1, round(share * max(self.box.width, self.box.height) * self.scale))

    def cut(self, labels: np.ndarray) -> np.ndarray:
        """GrabCut from ``labels`` (seeded, deterministic); the object as a full-image boolean mask, inside the
        points' box (the extreme points say where the object ends)."""
        if not (labels != cv2.GC_BGD).any():
            return np.zeros(self.shape, bool)
        cv2.setRNGSeed(0)
        background, foreground = np.zeros((1, 65)), np.zeros((1, 65))
        try:
            cv2.grabCut(
                cv2.cvtColor(self.patch, cv2.COLOR_RGB2BGR), labels, None, background, foreground, ITERATIONS,
                cv2.GC_INIT_WITH_MASK,
            )  # fmt: skip
        except cv2.error:
            pass  # a degenerate colour model (a flat crop): the seeds alone stand
        mask = _place((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD), self.crop, self.shape)
        box = self.box
        mask[:, : box.x0] = mask[:, box.x1 :] = False
        mask[: box.y0] = mask[box.y1 :] = False
        return mask

    def seed(self, labels: np.ndarray, points: Points, share: float, label: int) -> None:
        for x, y in points:
            cv2.circle(labels, self.local(x, y), self.radius(share), int(label), -1)


def grabcut_from_points(rgb: np.ndarray, points: Points) -> np.ndarray:
    """GrabCut inside the points' box: outside it background, the box probable object (GrabCut's own rectangle
    start), the points sure object. A full-image boolean mask.

    Starting from the box beats starting from the quadrilateral the points span (probable object inside it,
    probable background around): thin, bent objects fill little of that quadrilateral (docs/benchmarks.md).
    """
    frame = _Crop(rgb, points)
    labels, inside = frame.box_labels()
    labels[inside] = cv2.GC_PR_FGD
    frame.seed(labels, points, SEED_RADIUS, cv2.GC_FGD)
    return frame.cut(labels)


EDGE_FLOOR = 0.05
"""The cost of a step along the strongest edge, against 1.05 across a flat area: paths bend a long way to follow
an edge, but still cross a gap in it."""


def grabcut_from_edges(rgb: np.ndarray, points: Points) -> np.ndarray:
    """GrabCut started from the outline that image edges draw through the extreme points: the box outside that
    outline probable background, inside it probable object, its skeleton and the points sure object. A full-image
    boolean mask."""
    frame = _Crop(rgb, points)
    labels, inside = frame.box_labels()
    top, bottom, left, right = (frame.local(x, y) for x, y in points)
    cost = EDGE_FLOOR + (1.0 - _edge_strength(frame.patch)) ** 2
    outline = [
        step
        for a, b in ((top, right), (right, bottom), (bottom, left), (left, top))
        for step in _cheapest_path(cost, a, b)
    ]
    region = np.zeros(labels.shape, np.uint8)
    cv2.fillPoly(region, [np.array(outline, np.int32)], 1)
    region[~inside] = 0
    labels[inside] = cv2.GC_PR_BGD
    labels[region > 0] = cv2.GC_PR_FGD
    labels[cv2.ximgproc.thinning(region * 255) > 0] = cv2.GC_FGD
    frame.seed(labels, points, SEED_RADIUS, cv2.GC_FGD)
    return frame.cut(labels)


def _edge_strength(rgb: np.ndarray) -> np.ndarray:
    """Colour gradient magnitude (the strongest of the Lab channels' Sobel responses), 1 at the 99th percentile."""
    lab = cv2.cvtColor(cv2.GaussianBlur(rgb, (3, 3), 0), cv2.COLOR_RGB2LAB).astype(np.float32)
    strength = np.zeros(lab.shape[:2], np.float32)
    for channel in cv2.split(lab):
        gx, gy = cv2.Sobel(channel, cv2.CV_32F, 1, 0), cv2.Sobel(channel, cv2.CV_32F, 0, 1)
        strength = np.maximum(strength, cv2.magnitude(gx, gy))
    return np.clip(strength / (np.percentile(strength, 99) + 1e-6), 0.0, 1.0)


def _cheapest_path(cost: np.ndarray, a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    """The 8-connected path of least summed ``cost`` from pixel ``a`` to ``b`` (x, y), inside the rectangle the two
    span grown by a pixel: between two consecutive extreme points the outline stays in that corner of the box."""
    height, width = cost.shape
    x0, x1 = max(0, min(a[0], b[0]) - 1), min(width - 1, max(a[0], b[0]) + 1)
    y0, y1 = max(0, min(a[1], b[1]) - 1), min(height - 1, max(a[1], b[1]) + 1)
    window = cost[y0 : y1 + 1, x0 : x1 + 1]
    rows, cols = window.shape
    index = np.arange(rows * cols).reshape(rows, cols)
    starts, ends, weights = [], [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        here = (slice(0, rows - dy), slice(max(0, -dx), cols - max(0, dx)))
        there = (slice(dy, rows), slice(max(0, dx), cols + min(0, dx)))
        weight = (window[here] + window[there]).ravel() * (np.sqrt(2.0) if dx and dy else 1.0) / 2
        starts += [index[here].ravel(), index[there].ravel()]
        ends += [index[there].ravel(), index[here].ravel()]
        weights += [weight, weight]
    graph = coo_matrix((np.concatenate(weights), (np.concatenate(starts), np.concatenate(ends))), (rows * cols,) * 2)
    source, target = int(index[a[1] - y0, a[0] - x0]), int(index[b[1] - y0, b[0] - x0])
    _, previous = dijkstra(graph.tocsr(), indices=source, return_predecessors=True)
    path, node = [], target
    while node >= 0:
        path.append((node % cols + x0, node // cols + y0))
        node = previous[node]
    return path[::-1]


CLICK_RADIUS = 0.03
"""Radius of the sure label around a corrective click, as a share of the box's longer side."""


def grabcut_corrected(
    rgb: np.ndarray, points: Points, base: np.ndarray, clicks: Sequence[tuple[float, float, bool]]
) -> np.ndarray:
    """A mask corrected by clicks on its errors, each (x, y, object there): GrabCut redraws the mask from ``base``
    (probable labels), the extreme points and the clicks (sure labels), and of what it changed only the regions
    under a click are kept. A full-image boolean mask.

    Kept local, a correction fixes what was clicked and nothing else: GrabCut alone, refitting its colour models,
    may redraw a whole mask from one click, and a careless worker's click may land anywhere.
    """
    frame = _Crop(rgb, points)
    labels, inside = frame.box_labels()
    crop = frame.crop
    before = (
        cv2.resize(
            base[crop.y0 : crop.y1, crop.x0 : crop.x1].astype(np.float32), frame.size, interpolation=cv2.INTER_AREA
        )
        >= 0.5
    )
    labels[inside] = np.where(before[inside], cv2.GC_PR_FGD, cv2.GC_PR_BGD)
    frame.seed(labels, points, SEED_RADIUS, cv2.GC_FGD)
    for x, y, is_object in clicks:
        frame.seed(labels, [(x, y)], CLICK_RADIUS, cv2.GC_FGD if is_object else cv2.GC_BGD)
    return _changes_under(base, frame.cut(labels), [(x, y) for x, y, _ in clicks])


def _changes_under(before: np.ndarray, after: np.ndarray, clicks: Sequence[tuple[float, float]]) -> np.ndarray:
    """``before`` with the connected regions of change to ``after`` that hold a click applied, the others not."""
    changed = (before != after).astype(np.uint8)
    count, regions = cv2.connectedComponents(changed, connectivity=8)
    if count <= 1:
        return after
    height, width = before.shape
    touched = {int(regions[int(np.clip(y, 0, height - 1)), int(np.clip(x, 0, width - 1))]) for x, y in clicks} - {0}
    return before ^ np.isin(regions, list(touched))


def saliency_on_crop(rgb: np.ndarray, points: Points, predict, threshold: float = 0.5) -> np.ndarray:
    """The saliency backend run again on the padded box alone (``predict``: image -> map in [0, 1]), thresholded
    and kept inside the points' box. A full-image boolean mask."""
    height, width = rgb.shape[:2]
    box = points_box(points, width, height)
    crop = padded(box, CONTEXT, width, height)
    saliency = np.asarray(predict(np.ascontiguousarray(rgb[crop.y0 : crop.y1, crop.x0 : crop.x1])), np.float32)
    if saliency.shape != (crop.height, crop.width):
        saliency = cv2.resize(saliency, (crop.width, crop.height), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros((height, width), bool)
    mask[crop.y0 : crop.y1, crop.x0 : crop.x1] = saliency >= threshold
    inside = np.zeros_like(mask)
    inside[box.y0 : box.y1, box.x0 : box.x1] = True
    return mask & inside


def _place(small: np.ndarray, crop: Box, shape: tuple[int, int]) -> np.ndarray:
    """A mask computed on the (scaled) crop, put back at full resolution in a full-image mask."""
    full = np.zeros(shape, bool)
    if small.shape != (crop.height, crop.width):
        small = cv2.resize(small.astype(np.float32), (crop.width, crop.height), interpolation=cv2.INTER_LINEAR) >= 0.5
    full[crop.y0 : crop.y1, crop.x0 : crop.x1] = small
    return full
