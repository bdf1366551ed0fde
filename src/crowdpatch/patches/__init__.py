"""Step 2 geometry: which windows of a region are asked, and how their answers become a mask."""

from crowdpatch.patches.lattice import (
    WindowKey,
    can_subdivide,
    children,
    first_level,
    grid_cells,
    positions,
    window_box,
)
from crowdpatch.patches.rasterize import binarize, rasterize_cells, rasterize_windows

__all__ = [
    "WindowKey",
    "binarize",
    "can_subdivide",
    "children",
    "first_level",
    "grid_cells",
    "positions",
    "rasterize_cells",
    "rasterize_windows",
    "window_box",
]
