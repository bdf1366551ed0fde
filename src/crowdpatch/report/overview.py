"""A run at a glance: one row per way of getting a mask (none, saliency alone, the crowd's planners,
polygons) with its mask IoU, human time, speed against polygons and the classifier's worst-group
accuracy. The terminal and the HTML report show the same rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COLUMNS = ("guide", "mask IoU", "s/image", "x polygon", "worst group")


@dataclass(frozen=True)
class OverviewRow:
    guide: str
    mask_iou: float | None
    seconds_per_image: float | None
    speedup_vs_polygon: float | None
    """Polygon seconds / these seconds; None when it costs no human time or nothing was measured."""
    worst_group: float | None
    """Test worst-group accuracy of the classifier trained with this guide, when the run trained one."""

    def cells(self) -> list[str]:
        return [
            self.guide,
            _number(self.mask_iou, "{:.2f}"),
            _number(self.seconds_per_image, "{:.1f}" if (self.seconds_per_image or 0) < 10 else "{:.0f}"),
            _number(self.speedup_vs_polygon, "{:.2f}x"),
            _number(self.worst_group, "{:.2f}"),
        ]


def _number(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _worst_group(accuracy: Any) -> float | None:
    return accuracy.get("worst_group") if isinstance(accuracy, dict) else None


def overview_rows(summary: dict[str, Any]) -> list[OverviewRow]:
    """The rows a summary supports, cheapest first; a row appears only when the run has its figures."""
    seconds = summary.get("measured_seconds_per_image") or summary.get("modeled_seconds_per_image") or {}
    iou = summary.get("mask_iou") or {}
    accuracy = summary.get("accuracy") or {}
    planner = (summary.get("settings") or {}).get("planner", "fixed")
    rows = []
    if "none" in accuracy:
        rows.append(OverviewRow("none (plain training)", None, None, None, _worst_group(accuracy["none"])))
    if iou.get("saliency") is not None or "saliency" in accuracy:
        rows.append(
            OverviewRow("saliency alone", iou.get("saliency"), 0.0, None, _worst_group(accuracy.get("saliency")))
        )
    if summary.get("answers"):
        rows.append(
            OverviewRow(
                f"crowd, {planner} planner",
                iou.get("patch"),
                seconds.get("patch"),
                summary.get("speedup_vs_polygon"),
                _worst_group(accuracy.get("patch")),
            )
        )
    adaptive = summary.get("adaptive")
    if adaptive:
        rows.append(
            OverviewRow(
                "crowd, adaptive planner",
                adaptive.get("mask_iou"),
                adaptive.get("modeled_seconds_per_image"),
                adaptive.get("speedup_vs_polygon"),
                _worst_group(adaptive.get("accuracy")),
            )
        )
    if seconds.get("polygon") is not None:
        # A polygon traced on the object is the ground truth unless a baseline study measured its IoU.
        polygon_iou = (
            iou.get("polygon") if iou.get("polygon") is not None else (1.0 if iou.get("patch") is not None else None)
        )
        rows.append(
            OverviewRow(
                "polygon (ground truth)", polygon_iou, seconds["polygon"], 1.0, _worst_group(accuracy.get("gt"))
            )
        )
    return rows


def overview_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the overview; the worst-group column only when the run trained a classifier."""
    rows = overview_rows(summary)
    cells = [row.cells() for row in rows]
    if not any(row.worst_group is not None for row in rows):
        return list(COLUMNS[:-1]), [c[:-1] for c in cells]
    return list(COLUMNS), cells
