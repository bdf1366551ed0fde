"""Checks an answer carries in itself: a known-answer question the crowd pays nothing extra for.

Four extreme points clicked as top, bottom, left, right must be the topmost, bottommost, leftmost
and rightmost of the four. A careful worker's are (within a few pixels, a missed click aside);
four points clicked anywhere are, by chance, about once in 150 answers. So every extreme-points
answer is also a gold question on its worker, and quality control counts it as one.
"""

from __future__ import annotations

from typing import Any

from crowdpatch.crowd.kinds import EXTREME

ORDER_TOLERANCE = 0.05
"""How far (a share of the points' box) a point may pass another one's end and still count as in order."""


def in_order(points: list[list[float]]) -> bool:
    """Whether four points clicked as top, bottom, left, right are the topmost, bottommost, leftmost and rightmost."""
    (_, top), (_, bottom), (left, _), (right, _) = points
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    slack = ORDER_TOLERANCE * max(max(xs) - min(xs), max(ys) - min(ys), 1.0)
    return top <= min(ys) + slack and bottom >= max(ys) - slack and left <= min(xs) + slack and right >= max(xs) - slack


def passes_own_check(kind: str, value: Any) -> bool | None:
    """Whether an answer passes the check it carries in itself; None for an answer that carries none ("not here",
    yes/no, cells, ...)."""
    if kind == EXTREME and isinstance(value, dict) and isinstance(value.get("points"), list):
        return in_order(value["points"])
    return None
