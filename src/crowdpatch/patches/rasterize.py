"""Per-window posteriors -> a soft attention mask.

Votes are aggregated per window, never per pixel: a worker who never saw a window did not vote
"no" on it. A pixel is then decided by the finest level of windows that covers it, and the
overlap of those windows is used: with ``combine="min"`` a pixel is object only as far as every
finest window over it agrees (averaging all levels and thresholding at 0.5 dilates the mask badly).
"""

from __future__ import annotations

from typing import Literal, Mapping

import numpy as np

from crowdpatch.boxes import Box
from crowdpatch.patches.lattice import WindowKey, iter_levels, window_box

Combine = Literal["min", "mean"]


def rasterize_windows(
    region: Box,
    posteriors: Mapping[WindowKey, float],
    shape: tuple[int, int],
    combine: Combine = "min",
) -> np.ndarray:
    """Soft mask (float32, ``shape`` = (height, width)) from the posteriors of a region's windows.

    Pixels outside the region, or inside it but under no asked window, are 0.
    """
    soft = np.zeros(shape, dtype=np.float32)
    for level, keys in iter_levels(list(posteriors)).items():
        if combine == "min":
            value = np.full(shape, np.inf, dtype=np.float32)
        else:
            value = np.zeros(shape, dtype=np.float32)
        count = np.zeros(shape, dtype=np.int32)
        for key in keys:
            box = window_box(region, key)
            cut = (slice(box.y0, box.y1), slice(box.x0, box.x1))
            p = np.float32(posteriors[key])
            if combine == "min":
                np.minimum(value[cut], p, out=value[cut])
            else:
                value[cut] += p
            count[cut] += 1
        covered = count > 0
        if combine == "mean":
            value[covered] /= count[covered]
        soft[covered] = value[covered]
    return soft


def rasterize_cells(cells: list[Box], posteriors: list[float], shape: tuple[int, int]) -> np.ndarray:
    """Soft mask from a grid screen's cells (which do not overlap) and their posteriors."""
    if len(cells) != len(posteriors):
        raise ValueError(f"{len(cells)} cells but {len(posteriors)} posteriors")
    soft = np.zeros(shape, dtype=np.float32)
    for box, p in zip(cells, posteriors):
        soft[box.y0 : box.y1, box.x0 : box.x1] = p
    return soft


def binarize(soft: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The binary attention mask: object where the soft mask reaches ``threshold``."""
    return soft >= threshold
