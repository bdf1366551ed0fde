"""One PNG per sample image: what the crowd was asked and what came out of it.

Panels, left to right: the image; the saliency map with the verified regions outlined;
the patch windows asked, drawn over the image; the soft mask; the ground-truth mask.

Figures are built with the object-oriented ``Figure`` API on an Agg canvas rather than
through ``pyplot``: nothing is registered in pyplot's global figure manager (so hundreds of
figures cannot leak), the process-wide backend is left alone, and rendering is safe from
server threads, where pyplot is not.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from crowdpatch.boxes import Box

PANEL_INCHES = 1.8
DPI = 80
POSTERIOR_CMAP = colormaps["RdYlGn"]  # red = "no", green = "yes"
REGION_COLOUR = "#00e5ff"
GT_CMAP = ListedColormap(["black", "white", "#e69f00"])  # background, object, ignore
GT_IGNORE = 255
LEGEND = "regions: cyan   windows: green = yes, red = no (by posterior), thicker = coarser level"
GT_LEGEND = "   ground truth: orange = ignore"


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
    saliency: np.ndarray | None
    """H x W float in [0, 1], or None when no saliency map was computed."""
    regions: list[Box]
    """Verified step-1 regions."""
    windows: list[AskedWindow]
    soft_mask: np.ndarray
    """H x W float in [0, 1]."""
    gt_mask: np.ndarray | None
    """H x W uint8: 0 background, 1 object, 255 ignore; None when there is no ground truth."""
    iou: float | None


def _check(sample: SampleFigure) -> tuple[int, int]:
    image = np.asarray(sample.image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{sample.name!r}: image must be H x W x 3, got shape {image.shape}")
    height, width = image.shape[:2]
    maps = {"saliency": sample.saliency, "soft_mask": sample.soft_mask, "gt_mask": sample.gt_mask}
    for label, values in maps.items():
        if values is not None and np.shape(values) != (height, width):
            raise ValueError(
                f"{sample.name!r}: {label} has shape {np.shape(values)}, image is {(height, width)}"
            )
    return height, width


def _box_polygon(box: Box) -> list[tuple[float, float]]:
    # imshow centres pixel i on i, so the half-open box [x0, x1) spans x0 - 0.5 .. x1 - 0.5.
    x0, y0, x1, y1 = box.x0 - 0.5, box.y0 - 0.5, box.x1 - 0.5, box.y1 - 0.5
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _level_alpha(count: int) -> float:
    # A few windows read best opaque; hundreds of overlapping outlines turn into a solid smear
    # unless each is faint. Per level, so the few coarse windows stay visible under many fine ones.
    return float(np.clip(20.0 / max(count, 1), 0.3, 1.0))


def _window_linewidth(level: int) -> float:
    return max(0.5, 2.4 * 0.6 ** (max(level, 1) - 1))


def _draw_windows(ax, windows: list[AskedWindow]) -> None:
    # Coarse first and, within a level, "yes" last, so the windows that decide pixels sit on top.
    ordered = sorted(windows, key=lambda w: (w.level, w.posterior))
    if not ordered:
        return
    levels = np.array([w.level for w in ordered])
    per_level = dict(zip(*np.unique(levels, return_counts=True)))
    colours = POSTERIOR_CMAP(np.clip([w.posterior for w in ordered], 0.0, 1.0))
    colours[:, 3] = [_level_alpha(per_level[level]) for level in levels]
    ax.add_collection(
        PolyCollection(
            [_box_polygon(w.box) for w in ordered],
            closed=True,
            facecolors="none",
            edgecolors=colours,
            linewidths=[_window_linewidth(w.level) for w in ordered],
        )
    )


def _greyscale(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0


def _show(ax, values: np.ndarray, title: str, **imshow_kwargs) -> None:
    ax.imshow(values, interpolation="nearest", **imshow_kwargs)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def _figure_title(sample: SampleFigure) -> str:
    iou = "n/a" if sample.iou is None else f"{sample.iou:.3f}"
    return f"{sample.name}   IoU {iou}"


def build_figure(sample: SampleFigure) -> Figure:
    """The sample's figure, not yet saved (no file I/O)."""
    height, width = _check(sample)
    image = np.asarray(sample.image)
    panels = 5 if sample.gt_mask is not None else 4
    aspect = height / width
    top_inches, bottom_inches = 0.5, 0.22
    figure = Figure(
        figsize=(PANEL_INCHES * panels, PANEL_INCHES * aspect + top_inches + bottom_inches), dpi=DPI
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels)

    _show(axes[0], image, "image")

    if sample.saliency is not None:
        _show(axes[1], sample.saliency, "saliency + regions", cmap="gray", vmin=0.0, vmax=1.0)
    else:
        _show(axes[1], image, "regions (no saliency)", alpha=0.6)
    axes[1].add_collection(
        PolyCollection(
            [_box_polygon(r) for r in sample.regions],
            closed=True,
            facecolors="none",
            edgecolors=REGION_COLOUR,
            linewidths=1.5,
        )
    )

    # A dimmed grey image keeps the red / green outlines legible over any colours.
    _show(axes[2], _greyscale(image), f"{len(sample.windows)} windows asked", cmap="gray", vmin=0.0, vmax=2.0)
    _draw_windows(axes[2], sample.windows)

    _show(axes[3], sample.soft_mask, "soft mask", cmap="viridis", vmin=0.0, vmax=1.0)

    if sample.gt_mask is not None:
        gt = np.asarray(sample.gt_mask)
        classes = np.where(gt == GT_IGNORE, 2, np.clip(gt, 0, 1))
        _show(axes[4], classes, "ground truth", cmap=GT_CMAP, vmin=0, vmax=2)

    for ax in axes:
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
    figure.suptitle(_figure_title(sample), fontsize=9)
    legend = LEGEND + (GT_LEGEND if sample.gt_mask is not None else "")
    figure.text(0.5, 0.02, legend, ha="center", va="bottom", fontsize=7, color="#444444")
    fig_height = figure.get_figheight()
    figure.subplots_adjust(
        left=0.01, right=0.99, bottom=bottom_inches / fig_height, top=1 - top_inches / fig_height, wspace=0.06
    )
    return figure


def render_sample(sample: SampleFigure, path: Path) -> Path:
    """Write the sample's figure as a PNG at ``path`` (atomically) and return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = build_figure(sample)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            figure.savefig(out, format="png", dpi=DPI)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        figure.clear()
    return path
