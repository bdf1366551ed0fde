"""The overlapping window lattice of step 2.

Level ``L`` cuts a region into windows of ``1 / 2**L`` of its side, placed at a stride of half
a window (50% overlap): level 1 is the 3 x 3 lattice of half-side windows at quarter strides. A
window is named by its lattice index ``(level, ix, iy)``; the children of ``(L, ix, iy)`` are
``(L + 1, 2 * ix + j, 2 * iy + k)`` for ``j, k`` in 0..2. Neighbouring parents therefore share
children by name, which is how a window shared by two "yes" parents is asked only once, and every
coordinate is rounded from the same fraction of the region, so shared windows are pixel-identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from crowdpatch.boxes import Box

LATTICE_SIDE = 3
"""Windows per side of one parent's lattice (3 x 3, as in the paper)."""


@dataclass(frozen=True, order=True)
class WindowKey:
    """A window's place in a region's lattice: ``level`` >= 1 and its column/row index."""

    level: int
    ix: int
    iy: int

    def __post_init__(self) -> None:
        last = positions(self.level) - 1
        if self.level < 1 or not (0 <= self.ix <= last and 0 <= self.iy <= last):
            raise ValueError(f"window {self} is outside the level-{self.level} lattice")

    def __str__(self) -> str:
        return f"{self.level}:{self.ix}:{self.iy}"

    @classmethod
    def parse(cls, text: str) -> "WindowKey":
        level, ix, iy = (int(part) for part in text.split(":"))
        return cls(level, ix, iy)


def positions(level: int) -> int:
    """Windows per side at ``level``: 3, 7, 15, ... (``2**(level + 1) - 1``)."""
    return 2 ** (level + 1) - 1


def _edge(start: int, length: int, numerator: int, denominator: int) -> int:
    return start + round(numerator * length / denominator)


def _edges(region: Box, key: WindowKey) -> tuple[int, int, int, int]:
    steps = 2 ** (key.level + 1)
    return (
        _edge(region.x0, region.width, key.ix, steps),
        _edge(region.y0, region.height, key.iy, steps),
        _edge(region.x0, region.width, key.ix + 2, steps),
        _edge(region.y0, region.height, key.iy + 2, steps),
    )


def window_box(region: Box, key: WindowKey) -> Box:
    """The pixel box of ``key`` inside ``region``."""
    return Box(*_edges(region, key))


def first_level() -> list[WindowKey]:
    """The level-1 lattice: 3 x 3 windows, each half the region's side."""
    return [WindowKey(1, ix, iy) for iy in range(LATTICE_SIDE) for ix in range(LATTICE_SIDE)]


def children(key: WindowKey) -> list[WindowKey]:
    """The 3 x 3 half-size windows that subdivide ``key``."""
    return [
        WindowKey(key.level + 1, 2 * key.ix + j, 2 * key.iy + k)
        for k in range(LATTICE_SIDE)
        for j in range(LATTICE_SIDE)
    ]


def can_subdivide(region: Box, key: WindowKey, max_depth: int, min_side: int) -> bool:
    """Whether a "yes" on ``key`` should be refined: below the depth limit and children not too small."""
    if key.level >= max_depth:
        return False
    # Measure the rounded children, not the ideal fraction: rounding can take a pixel off.
    for child in children(key):
        edges = _edges(region, child)
        if edges[2] - edges[0] < min_side or edges[3] - edges[1] < min_side:
            return False
    return True


def grid_cells(region: Box, size: int) -> list[Box]:
    """A ``size`` x ``size`` lattice of non-overlapping cells over ``region``, row-major."""
    if region.width < size or region.height < size:
        raise ValueError(f"region {region} is smaller than a {size} x {size} grid")
    return [
        Box(
            _edge(region.x0, region.width, col, size),
            _edge(region.y0, region.height, row, size),
            _edge(region.x0, region.width, col + 1, size),
            _edge(region.y0, region.height, row + 1, size),
        )
        for row in range(size)
        for col in range(size)
    ]


def coarse_parents(resolution: int, size: int) -> list[int]:
    """For each cell of a ``resolution`` x ``resolution`` lattice, the ``size`` x ``size`` cell its centre falls in.

    A coarse grid vote is read as a vote on every fine cell under it (row-major indices both).
    """
    parents = []
    for row in range(resolution):
        for col in range(resolution):
            parents.append(int((row + 0.5) * size / resolution) * size + int((col + 0.5) * size / resolution))
    return parents


def iter_levels(keys: Iterator[WindowKey] | list[WindowKey]) -> dict[int, list[WindowKey]]:
    """Group keys by level, coarsest first."""
    grouped: dict[int, list[WindowKey]] = {}
    for key in keys:
        grouped.setdefault(key.level, []).append(key)
    return dict(sorted(grouped.items()))
