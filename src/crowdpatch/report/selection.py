"""Which images a report shows: the best, the median and the worst by mask IoU, so a reader sees
the whole range of quality rather than whatever came first."""

from __future__ import annotations

from collections.abc import Sequence

BEST, MEDIAN, WORST, UNSCORED = "best", "median", "worst", "no ground truth"
PER_GROUP = 3


def pick_samples(ious: Sequence[float | None], per_group: int = PER_GROUP) -> list[tuple[str, int]]:
    """``(group, index)`` pairs: the ``per_group`` best, median and worst IoUs, each group from high to low IoU.

    An image appears once even when the groups overlap (fewer than ``3 * per_group`` scored
    images). Images without an IoU (no ground truth) are shown apart, the first ``per_group`` of
    them, or the first ``3 * per_group`` when no image has one.
    """
    scored = sorted((i for i, iou in enumerate(ious) if iou is not None), key=lambda i: -ious[i])
    unscored = [i for i, iou in enumerate(ious) if iou is None]
    count = len(scored)
    start = max(0, min(count - per_group, count // 2 - per_group // 2))
    groups = {
        BEST: scored[:per_group],
        WORST: scored[max(per_group, count - per_group) :],
        MEDIAN: scored[start : start + per_group],
    }
    taken: set[int] = set()
    picked: dict[str, list[int]] = {}
    for group in (BEST, WORST, MEDIAN):  # best and worst claim first: the extremes matter most
        picked[group] = [i for i in groups[group] if i not in taken]
        taken.update(picked[group])
    ordered = [(group, i) for group in (BEST, MEDIAN, WORST) for i in sorted(picked[group], key=lambda i: -ious[i])]
    ordered += [(UNSCORED, i) for i in unscored[: per_group if scored else 3 * per_group]]
    return ordered
