"""The worker page's instruction examples, drawn by the same code as the real task pictures.

A small made-up scene (an object on foliage under a sky, and a bush) stands in for a photo whose
answers are known; each example is that scene passed through :mod:`images` exactly as a task's
photo is (region outline, patch crop, where-it-is thumbnail, a pick's or a correction's outline over
its view), and the page lays it out with the task screen's own frame, grid, point and click markers
and buttons. So the examples look like what the worker will answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import Image

from crowdpatch.boxes import Box
from crowdpatch.masks.candidates import CONTEXT, padded, points_box
from crowdpatch.saliency.outline import outline_polygons
from crowdpatch.server import images

ExampleName = Literal[
    "verify-yes",
    "verify-no",
    "grid",
    "patch-yes",
    "patch-no",
    "patch-yes-context",
    "patch-no-context",
    "extreme",
    "pick-1",
    "pick-2",
    "correct",
]

SCENE_WIDTH, SCENE_HEIGHT = 640, 480
OUTLINE_MARGIN_PX = 12
"""A saliency cluster's outline runs a little outside the object; the example's does too."""


@dataclass(frozen=True)
class Scene:
    photo: Image.Image
    target: np.ndarray
    """Boolean mask of the object the examples ask about."""
    bush: np.ndarray
    """Boolean mask of a background thing that a saliency map might also propose."""

    @property
    def region(self) -> Box:
        return _bounds(self.target).pad(0.15, SCENE_WIDTH, SCENE_HEIGHT)

    @property
    def patch_yes(self) -> Box:
        """A window on the object's upper edge: a small part of the object, mostly background."""
        ys, xs = np.nonzero(self.target)
        top = int(ys.min())
        x = int(np.median(xs[ys < top + 8]))
        return Box(x - 60, top - 90, x + 60, top + 30)

    @property
    def patch_no(self) -> Box:
        """A window of foliage alone."""
        return Box(30, 350, 150, 470)


def _bounds(mask: np.ndarray) -> Box:
    ys, xs = np.nonzero(mask)
    return Box(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    ys, xs = np.mgrid[0:SCENE_HEIGHT, 0:SCENE_WIDTH]
    return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0


@lru_cache(maxsize=1)
def scene() -> Scene:
    """Sky, foliage (busy green, where thin outlines get lost), a bush, and a brown object of no particular kind."""
    import cv2

    rng = np.random.default_rng(7)
    ys = np.arange(SCENE_HEIGHT)[:, None, None] / SCENE_HEIGHT
    sky = np.array([150, 190, 235]) * (1 - 0.4 * ys) + np.array([215, 230, 245]) * 0.4 * ys
    photo = np.broadcast_to(sky, (SCENE_HEIGHT, SCENE_WIDTH, 3)).astype(np.float32).copy()
    ground = np.arange(SCENE_HEIGHT) >= SCENE_HEIGHT * 0.38
    coarse = cv2.resize(
        rng.random((SCENE_HEIGHT // 8, SCENE_WIDTH // 8)), (SCENE_WIDTH, SCENE_HEIGHT), interpolation=cv2.INTER_CUBIC
    )
    leaves = np.clip(0.6 * coarse + 0.4 * rng.random((SCENE_HEIGHT, SCENE_WIDTH)), 0, 1)
    green = np.stack([40 + 50 * leaves, 95 + 90 * leaves, 30 + 35 * leaves], axis=-1)
    photo[ground] = green[ground]
    bush = _ellipse(110, 250, 80, 55) | _ellipse(165, 275, 60, 45)
    photo[bush] = np.stack([20 + 25 * leaves, 60 + 40 * leaves, 20 + 15 * leaves], axis=-1)[bush]
    target = _ellipse(360, 300, 120, 62) | _ellipse(455, 235, 42, 30) | _ellipse(420, 262, 30, 40)
    shade = np.clip((np.mgrid[0:SCENE_HEIGHT, 0:SCENE_WIDTH][0] - 200) / 200, 0, 1)
    brown = np.stack([150 - 60 * shade, 95 - 45 * shade, 55 - 25 * shade], axis=-1)
    photo[target] = brown[target]
    return Scene(Image.fromarray(photo.clip(0, 255).astype(np.uint8)), target, bush)


def _grown(mask: np.ndarray, pixels: int) -> np.ndarray:
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def grid_cells_on(grid_size: int) -> list[int]:
    """The grid cells (row-major) that show any part of the object: the example's right answer."""
    example = scene()
    region = example.region
    cut = example.target[region.y0 : region.y1, region.x0 : region.x1]
    on = []
    for row in range(grid_size):
        for col in range(grid_size):
            rows = slice(row * cut.shape[0] // grid_size, (row + 1) * cut.shape[0] // grid_size)
            cols = slice(col * cut.shape[1] // grid_size, (col + 1) * cut.shape[1] // grid_size)
            if cut[rows, cols].any():
                on.append(row * grid_size + col)
    return on


def extreme_points() -> list[tuple[int, int]]:
    """The object's top, bottom, left and right ends (scene pixels): the extreme example's right answer."""
    ys, xs = np.nonzero(scene().target)
    ends = (np.argmin(ys), np.argmax(ys), np.argmin(xs), np.argmax(xs))
    return [(int(xs[i]), int(ys[i])) for i in ends]


def extreme_marks() -> list[tuple[float, float]]:
    """Where the extreme example's markers sit, as percentages of the picture's width and height."""
    return [
        (round(100 * (x + 0.5) / SCENE_WIDTH, 2), round(100 * (y + 0.5) / SCENE_HEIGHT, 2)) for x, y in extreme_points()
    ]


def pick_view() -> Box:
    """The pick example's view: the extreme points' box padded as a real pick's is."""
    return padded(points_box(extreme_points(), SCENE_WIDTH, SCENE_HEIGHT), CONTEXT, SCENE_WIDTH, SCENE_HEIGHT)


def pick_outlines(k: int) -> list[list[list[int]]]:
    """The pick example's outline ``k``: 1 leaves the object's head out (a typical miss), 2 follows the object."""
    example = scene()
    if k == 2:
        return outline_polygons(_grown(example.target, 2))
    return outline_polygons(_body_outline_mask())


def _body_outline_mask() -> np.ndarray:
    """The mask of the outline that leaves the object's head out (pick outline 1, the correction example's)."""
    return _grown(_ellipse(360, 300, 120, 62) & scene().target, 2)


def correct_click() -> tuple[int, int]:
    """Where the correction example clicks (scene pixels): the middle of the part of the object its outline leaves
    out (the pixel farthest from that part's edge), as a worker would click the head."""
    import cv2

    missed = (scene().target & ~_body_outline_mask()).astype(np.uint8)
    depth = cv2.distanceTransform(missed, cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return int(x), int(y)


def correct_marks() -> list[tuple[float, float]]:
    """Where the correction example's marker sits, as percentages of its picture (the pick view) across and down."""
    view, (x, y) = pick_view(), correct_click()
    return [(round(100 * (x + 0.5 - view.x0) / view.width, 2), round(100 * (y + 0.5 - view.y0) / view.height, 2))]


@lru_cache(maxsize=64)
def render(name: ExampleName, css_px: float, dpr: float) -> bytes:
    """One example picture as a JPEG, drawn ``css_px`` x ``dpr`` pixels wide."""
    example = scene()
    width = images.device_width(css_px, dpr)
    if name in ("verify-yes", "verify-no"):
        thing = example.target if name == "verify-yes" else example.bush
        outlines = outline_polygons(_grown(thing, OUTLINE_MARGIN_PX))
        return images.jpeg(images.render_outlined(example.photo, _bounds(thing), outlines, width, dpr))
    if name == "grid":
        return images.jpeg(images.render_patch(example.photo, example.region, example.region, width, dpr))
    if name == "extreme":
        return images.jpeg(images.resampled(example.photo, images.whole_box(example.photo), width))
    if name in ("pick-1", "pick-2"):
        return images.jpeg(images.render_choice(example.photo, pick_view(), pick_outlines(int(name[-1])), width, dpr))
    if name == "correct":  # the outline that misses the head, as a correction question shows it
        return images.jpeg(images.render_choice(example.photo, pick_view(), pick_outlines(1), width, dpr))
    window = example.patch_yes if name.startswith("patch-yes") else example.patch_no
    if name.endswith("-context"):
        return images.jpeg(images.render_context(example.photo, window, width, dpr))
    view = images.view_box("patch", window, SCENE_WIDTH, SCENE_HEIGHT)
    return images.jpeg(images.render_patch(example.photo, window, view, width, dpr))
