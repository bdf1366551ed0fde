"""Three PNG panels per sample image, each the photo at its own aspect ratio, large enough to judge an edge:

(a) the photo with the verified regions and the questions asked (windows or grid cells, coloured
by the crowd's answer; the extreme points and correction clicks of the precise planner); (b) the
final mask (what ``masks/soft`` holds, after refinement) over the photo, the ground truth's outline
dashed for comparison; (c) the ground truth over the photo.

Figures are built with the object-oriented ``Figure`` API on an Agg canvas rather than
through ``pyplot``: nothing is registered in pyplot's global figure manager (so hundreds of
figures cannot leak), the process-wide backend is left alone, and rendering is safe from
server threads, where pyplot is not.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib import colormaps, patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from crowdpatch.boxes import Box

MIN_PANEL_PX = 400
"""Narrowest panel: small images are enlarged (nearest neighbour, so their pixels stay visible)."""
MAX_PANEL_PX = 720
DPI = 100
POSTERIOR_CMAP = colormaps["RdYlGn"]  # red = "no", green = "yes"
REGION_COLOUR = "#00e5ff"
MASK_COLOUR = "#ff2bd6"
POINT_COLOUR = "#00e5ff"
CLICK_COLOUR = "#ff2bd6"
GT_COLOUR = "#ffd400"
IGNORE_COLOUR = np.array([0.9, 0.62, 0.0])
GT_IGNORE = 255
OUTSIDE_BRIGHTNESS = 0.35
"""How bright the photo stays outside a mask: dim enough to see the shape, bright enough to see what was left out."""
WINDOW_FILL_ALPHA = 0.25


@dataclass(frozen=True)
class AskedWindow:
    """A patch window shown to the crowd and the aggregated answer for it."""

    box: Box
    level: int
    """Lattice level, 1 = the coarsest windows over the region."""
    posterior: float
    """Probability that the window holds the target."""


@dataclass
class SampleFigure:
    """Everything drawn for one image."""

    name: str
    image: np.ndarray
    """H x W x 3 uint8."""
    regions: list[Box]
    """Verified step-1 regions."""
    windows: list[AskedWindow]
    mask: np.ndarray
    """H x W float in [0, 1]: the final soft mask, as written to ``masks/soft``."""
    gt_mask: np.ndarray | None
    """H x W uint8: 0 background, 1 object, 255 ignore; None when there is no ground truth."""
    iou: float | None
    """IoU of the binarized final mask with the ground truth."""
    saliency_iou: float | None = None
    threshold: float = 0.5
    """Soft value from which a pixel is in the binary mask."""
    points: list[list[float]] = field(default_factory=list)
    """Extreme points the mask was drawn from (x, y), if any."""
    clicks: list[list[float]] = field(default_factory=list)
    """Clicks on the errors of the mask's outline (x, y), every correction round's."""


def _check(sample: SampleFigure) -> tuple[int, int]:
    image = np.asarray(sample.image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{sample.name!r}: image must be H x W x 3, got shape {image.shape}")
    height, width = image.shape[:2]
    for label, values in {"mask": sample.mask, "gt_mask": sample.gt_mask}.items():
        if values is not None and np.shape(values) != (height, width):
            raise ValueError(f"{sample.name!r}: {label} has shape {np.shape(values)}, image is {(height, width)}")
    return height, width


def panel_size(height: int, width: int) -> tuple[int, int]:
    """Pixel size of a panel: the image's aspect ratio, MIN_PANEL_PX to MAX_PANEL_PX wide."""
    panel_width = int(np.clip(width, MIN_PANEL_PX, MAX_PANEL_PX))
    return panel_width, max(1, round(panel_width * height / width))


def _box_polygon(box: Box) -> list[tuple[float, float]]:
    # imshow centres pixel i on i, so the half-open box [x0, x1) spans x0 - 0.5 .. x1 - 0.5.
    x0, y0, x1, y1 = box.x0 - 0.5, box.y0 - 0.5, box.x1 - 0.5, box.y1 - 0.5
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _level_alpha(count: int) -> float:
    # A few windows read best opaque; hundreds of overlapping outlines turn into a solid smear
    # unless each is faint. Per level, so the few coarse windows stay visible under many fine ones.
    return float(np.clip(20.0 / max(count, 1), 0.3, 1.0))


def _window_linewidth(level: int) -> float:
    return max(0.6, 2.4 * 0.6 ** (max(level, 1) - 1))


def _halo(width: float) -> list:
    """A dark rim under a line, so it shows on any background (foliage, water, sky)."""
    return [patheffects.Stroke(linewidth=width + 2, foreground="black", alpha=0.7), patheffects.Normal()]


def _draw_windows(ax, windows: list[AskedWindow]) -> None:
    # Coarse first and, within a level, "yes" last, so the windows that decide pixels sit on top.
    ordered = sorted(windows, key=lambda w: (w.level, w.posterior))
    if not ordered:
        return
    levels = np.array([w.level for w in ordered])
    per_level = dict(zip(*np.unique(levels, return_counts=True)))
    colours = POSTERIOR_CMAP(np.clip([w.posterior for w in ordered], 0.0, 1.0))
    colours[:, 3] = [_level_alpha(per_level[level]) for level in levels]
    # A faint fill in the answer's colour: cells of a grid screen share their edges, so the outline
    # alone would not say which side a colour belongs to.
    fills = colours.copy()
    fills[:, 3] *= WINDOW_FILL_ALPHA
    ax.add_collection(
        PolyCollection(
            [_box_polygon(w.box) for w in ordered],
            closed=True,
            facecolors=fills,
            edgecolors=colours,
            linewidths=[_window_linewidth(w.level) for w in ordered],
        )
    )


def _draw_marks(ax, points: list[list[float]], marker: str, colour: str) -> None:
    """Clicked points as large haloed markers (drawn at their image pixel)."""
    if points:
        xs, ys = zip(*((x, y) for x, y in points))
        ax.scatter(xs, ys, s=90, marker=marker, c=colour, edgecolors="black", linewidths=1.2, zorder=3)


def _dim_outside(image: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The photo, full brightness where ``inside`` is 1 and dimmed where it is 0 (soft values blend)."""
    weight = OUTSIDE_BRIGHTNESS + (1 - OUTSIDE_BRIGHTNESS) * np.clip(inside, 0.0, 1.0)
    return np.clip(image.astype(np.float32) / 255.0 * weight[..., None], 0.0, 1.0)


def _outline(ax, values: np.ndarray, level: float, colour: str, width: float, dashed: bool = False) -> None:
    if values.min() < level <= values.max():
        contour = ax.contour(
            values, levels=[level], colors=[colour], linewidths=width, linestyles="dashed" if dashed else "solid"
        )
        contour.set(path_effects=_halo(width))


def _new_panel(height: int, width: int):
    panel_width, panel_height = panel_size(height, width)
    figure = Figure(figsize=(panel_width / DPI, panel_height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    return figure, ax


def _finish_axes(ax, height: int, width: int) -> None:
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)


def build_panels(sample: SampleFigure) -> dict[str, Figure]:
    """The sample's panels by name (``asked``, ``mask``, ``truth`` when it has ground truth), not yet saved."""
    height, width = _check(sample)
    image = np.asarray(sample.image)
    gt = None if sample.gt_mask is None else np.asarray(sample.gt_mask)
    panels: dict[str, Figure] = {}

    figure, ax = _new_panel(height, width)
    # Slightly dimmed, so the red / green outlines of the questions stay legible over any colours.
    ax.imshow(_dim_outside(image, np.full((height, width), 0.75)), interpolation="nearest", aspect="auto")
    _draw_windows(ax, sample.windows)
    regions = PolyCollection(
        [_box_polygon(r) for r in sample.regions],
        closed=True,
        facecolors="none",
        edgecolors=REGION_COLOUR,
        linewidths=2.0,
    )
    regions.set(path_effects=_halo(2.0))
    ax.add_collection(regions)
    _draw_marks(ax, sample.points, "o", POINT_COLOUR)
    _draw_marks(ax, sample.clicks, "X", CLICK_COLOUR)
    _finish_axes(ax, height, width)
    panels["asked"] = figure

    figure, ax = _new_panel(height, width)
    mask = np.clip(np.asarray(sample.mask, dtype=np.float32), 0.0, 1.0)
    ax.imshow(_dim_outside(image, mask), interpolation="nearest", aspect="auto")
    _outline(ax, mask, sample.threshold, MASK_COLOUR, 2.0)
    if gt is not None:
        _outline(ax, (gt == 1).astype(np.float32), 0.5, GT_COLOUR, 1.2, dashed=True)
    _finish_axes(ax, height, width)
    panels["mask"] = figure

    if gt is not None:
        figure, ax = _new_panel(height, width)
        shown = _dim_outside(image, (gt == 1).astype(np.float32))
        ignore = gt == GT_IGNORE
        shown[ignore] = 0.5 * shown[ignore] + 0.5 * IGNORE_COLOUR
        ax.imshow(shown, interpolation="nearest", aspect="auto")
        _outline(ax, (gt == 1).astype(np.float32), 0.5, GT_COLOUR, 2.0)
        _finish_axes(ax, height, width)
        panels["truth"] = figure
    return panels


def _save_png(figure: Figure, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # readable like any written file (mkstemp makes it private)
        with os.fdopen(fd, "wb") as out:
            figure.savefig(out, format="png", dpi=DPI)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        figure.clear()


def render_sample(sample: SampleFigure, directory: Path, stem: str) -> dict[str, Path]:
    """Write the sample's panels as ``directory/<stem>-<panel>.png`` (atomically); return their paths by panel."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for panel, figure in build_panels(sample).items():
        paths[panel] = directory / f"{stem}-{panel}.png"
        _save_png(figure, paths[panel])
    return paths
