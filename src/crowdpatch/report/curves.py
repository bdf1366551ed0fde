"""Cost curves: human-seconds per image against mask IoU, one line per planner, polygons for reference.

Each point is one run's ``summary.json`` (``crowdpatch bench-masks`` or ``demo``); runs of the same
planner on the same data (different budgets or grid sizes) form that planner's curve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator

SUMMARY = "summary.json"
TICK_SECONDS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


@dataclass(frozen=True)
class CurvePoint:
    planner: str
    dataset: str
    seconds: float
    iou: float
    label: str
    """What distinguishes the point on its curve (budget, grid size)."""


def point_from_summary(summary: dict[str, Any], dataset: str) -> CurvePoint | None:
    """A summary's point, or None when it has no IoU (no GT masks) or no cost."""
    seconds = (summary.get("modeled_seconds_per_image") or summary.get("measured_seconds_per_image") or {}).get("patch")
    iou = (summary.get("mask_iou") or {}).get("patch")
    if seconds is None or iou is None:
        return None
    settings = summary.get("settings", {})
    planner = settings.get("planner", "fixed")
    budget = settings.get("budget_seconds")
    label = (
        f"grid {settings.get('grid_size')}"
        if settings.get("presentation") == "grid"
        else f"depth {settings.get('max_depth')}"
    )
    if budget:
        label += f", budget {budget:g} s"
    return CurvePoint(planner, dataset, float(seconds), float(iou), label)


def summary_points(summary: dict[str, Any], dataset: str) -> list[CurvePoint]:
    """A summary's points: its own planner's, and the adaptive planner's when the run has both (the demo)."""
    points = []
    point = point_from_summary(summary, dataset)
    if point is not None:
        points.append(point)
    adaptive = summary.get("adaptive")
    if adaptive and adaptive.get("mask_iou") is not None:
        points.append(
            CurvePoint("adaptive", dataset, adaptive["modeled_seconds_per_image"], adaptive["mask_iou"], "demo")
        )
    return points


def load_points(paths: Iterable[Path]) -> list[CurvePoint]:
    """Points from run directories (holding summary.json) or summary files; the dataset is the run's images folder."""
    points = []
    for path in paths:
        file = path / SUMMARY if path.is_dir() else path
        if not file.is_file():
            raise ValueError(f"{path}: no {SUMMARY} (give a bench-masks/demo output folder or a summary file)")
        try:
            summary = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{file}: not valid JSON ({exc})") from exc
        points.extend(summary_points(summary, summary.get("dataset") or file.parent.name))
    return points


PLANNER_STYLES = {"adaptive": "-o", "fixed": ":^", "precise": "--s"}
"""Line and marker per planner (the colour is the dataset's)."""


def plot_curves(
    points: list[CurvePoint],
    polygon_seconds: float,
    path: Path,
    polygon_iou: float | None = None,
    saliency_iou: float | None = None,
    annotate: bool = False,
) -> Path:
    """One figure: a line per (planner, dataset), sorted by cost, and the polygon cost as a vertical line.

    ``polygon_iou`` also marks the polygon reference as a point (1.0 when polygons are the ground
    truth, or a baseline study's measured IoU); ``saliency_iou`` draws saliency alone, which costs
    no human time, as a horizontal line (a log axis has no 0 s). ``annotate`` writes each point's
    seconds and IoU beside it (for a single run's few points).
    """
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    groups: dict[tuple[str, str], list[CurvePoint]] = {}
    for point in points:
        groups.setdefault((point.planner, point.dataset), []).append(point)
    datasets = sorted({dataset for _, dataset in groups})
    for (planner, dataset), members in sorted(groups.items()):
        members.sort(key=lambda p: p.seconds)
        # One colour per dataset, one line style per planner: the gap between planners reads at a glance.
        style = PLANNER_STYLES.get(planner, "--s")
        colour = f"C{datasets.index(dataset) % 10}"
        ax.plot(
            [p.seconds for p in members], [p.iou for p in members], style, color=colour, label=f"{planner} ({dataset})"
        )
        if annotate:
            for p in members:
                ax.annotate(
                    f"{planner}: {p.seconds:.0f} s, IoU {p.iou:.2f}",
                    (p.seconds, p.iou),
                    xytext=(6, -12),
                    textcoords="offset points",
                    fontsize=8,
                    color=colour,
                )
    ax.axvline(polygon_seconds, color="black", linestyle=":", label=f"polygon ({polygon_seconds:g} s per object)")
    if polygon_iou is not None:
        ax.plot(
            [polygon_seconds],
            [polygon_iou],
            "*",
            color="black",
            markersize=12,
            label=f"polygon mask (IoU {polygon_iou:.2f})",
        )
    if saliency_iou is not None:
        ax.axhline(saliency_iou, color="grey", linestyle="-.", label=f"saliency alone, 0 s (IoU {saliency_iou:.2f})")
    ax.set_xscale("log")
    seconds = [p.seconds for p in points if p.seconds > 0] + [polygon_seconds]
    low, high = min(seconds) / 1.8, max(seconds) * 1.8
    ax.set_xlim(low, high)
    # Round seconds as plain numbers: a narrow log range otherwise gets ticks like "7 x 10^1".
    ax.xaxis.set_major_locator(FixedLocator([t for t in TICK_SECONDS if low <= t <= high]))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("human seconds per image (log)")
    ax.set_ylabel("mask IoU vs ground truth")
    ax.set_ylim(0, 1.05)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def curves_table(points: list[CurvePoint], polygon_seconds: float) -> str:
    """The same points as a Markdown table, cheapest first per curve."""
    lines = ["| planner | dataset | point | s/image | vs polygon | mask IoU |", "|---|---|---|---|---|---|"]
    for p in sorted(points, key=lambda p: (p.dataset, p.planner, p.seconds)):
        lines.append(
            f"| {p.planner} | {p.dataset} | {p.label} | {p.seconds:.1f} | "
            f"{polygon_seconds / p.seconds:.2f}x | {p.iou:.3f} |"
        )
    return "\n".join(lines)
